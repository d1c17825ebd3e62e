"""Evaluation suites: several models x several tasks from one YAML file, one comparison table and plot.

```yaml
out: runs/compare            # default: a folder named after the YAML file, beside it
tasks: [shapes]              # or "shapes,pope"
data: {world: runs/lab/world}
batch_size: 8
max_new_tokens: null         # null: each task's default
limit: null
scoring: reference           # or robust (docs/evaluation.md)
group_by: [task]             # optional: headline metric per value of these sample fields
on_error: raise              # or skip: questions too long for a model's context are left out and counted
models:
  - {name: bunny-full, path: runs/lab/bunny-full}
  - {name: bunny-lora, path: runs/lab/bunny-lora}
```
Relative paths are relative to the YAML file. Each model gets ``<out>/<name>/`` (results.json, samples, report);
the suite writes ``<out>/comparison.{md,png,json}``. Reruns resume per model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vlmforge.data.records import ON_ERROR_CHOICES
from vlmforge.errors import ConfigError
from vlmforge.eval.report import write_comparison
from vlmforge.eval.runner import evaluate
from vlmforge.eval.types import Generator

GeneratorFactory = Callable[[str], Generator]


def _default_factory(model_dir: str) -> Generator:
    from vlmforge.eval.generator import load_generator  # imported only when needed: it loads torch

    return load_generator(model_dir)


def _names(value: str | list) -> list[str]:
    """A YAML list or a comma-separated string of names."""
    return [t.strip() for t in value.split(",")] if isinstance(value, str) else list(value)


def load_suite(path: str | Path) -> dict[str, Any]:
    """Read and check a suite YAML; relative paths become absolute (relative to the YAML file)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"suite file {file} does not exist")
    spec = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level")
    base = file.parent

    def rel(p: str) -> str:
        return str(Path(p) if Path(p).is_absolute() else base / p)

    models = spec.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{file}: `models` must be a non-empty list of {{name, path}}")
    for i, m in enumerate(models):
        if not isinstance(m, dict) or not m.get("path"):
            raise ConfigError(f"{file}: models[{i}] needs a `path`")
        m["path"] = rel(m["path"])
        m.setdefault("name", Path(m["path"]).name)
    names = [m["name"] for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{file}: model names must be unique, got {names}")
    spec["tasks"] = _names(spec.get("tasks") or ["shapes"])
    spec["group_by"] = _names(spec.get("group_by") or [])
    spec["on_error"] = spec.get("on_error") or "raise"
    if spec["on_error"] not in ON_ERROR_CHOICES:
        raise ConfigError(f"{file}: `on_error` must be one of {', '.join(ON_ERROR_CHOICES)}, got {spec['on_error']!r}")
    spec["data"] = {k: rel(str(v)) for k, v in (spec.get("data") or {}).items() if k != "world_split"} | (
        {"world_split": spec["data"]["world_split"]} if "world_split" in (spec.get("data") or {}) else {}
    )
    spec["out"] = rel(spec["out"]) if spec.get("out") else str(base / file.stem)
    return spec


def run_suite(
    spec: Mapping[str, Any] | str | Path,
    factory: GeneratorFactory | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Evaluate every model of the suite; returns {model name: results} and writes the comparison. ``force``
    evaluates every model from scratch instead of reusing the predictions saved for it."""
    spec = load_suite(spec) if isinstance(spec, str | Path) else spec
    factory = factory or _default_factory
    out = Path(spec["out"])
    runs = []
    for m in spec["models"]:
        results = evaluate(
            factory(m["path"]), spec["tasks"], out / m["name"], batch_size=int(spec.get("batch_size") or 8),
            max_new_tokens=spec.get("max_new_tokens"), limit=spec.get("limit"), data=spec["data"],
            model={"name": m["name"], "path": m["path"]}, progress=progress, force=force,
            scoring=spec.get("scoring") or "reference",
            group_by=spec.get("group_by") or (), on_error=spec.get("on_error") or "raise",
        )  # fmt: skip
        runs.append((m["name"], results))
    write_comparison(runs, out)
    (out / "comparison.json").write_text(json.dumps(dict(runs), indent=2, ensure_ascii=False))
    return dict(runs)
