"""The shapes lab: world -> foundation models -> recipes x seeds -> evaluation on held-out images -> report.

Everything here is orchestration over the public pieces (``build_world``, ``build_foundation``, ``run_recipe``,
``evaluate``); the lab has no code path of its own inside them. Reruns reuse finished work: the world and the
foundation models are cached, finished stages are skipped, finished predictions are reused -- each only if made
from the same inputs (freshness.py: work from other foundation models, settings or weights goes to OUT/stale/).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmforge.shapes.lab.config import LabConfig
from vlmforge.shapes.lab.genixer import RECIPE_NAMES as GENIXER_RECIPES
from vlmforge.shapes.lab.recipe_runs import shipped_recipe, summarize, train_and_evaluate
from vlmforge.shapes.lab.side_by_side import run_side_by_side
from vlmforge.shapes.lab.unicorn import RECIPE_NAMES as UNICORN_RECIPES
from vlmforge.shapes.lab.unix import RECIPE_NAMES as UNIX_RECIPES

RECIPES = {"bunny": "shapes-bunny.yaml"}
# `--recipes unicorn` = its four recipes; `--recipes unix` = the unified model's two arms
RECIPE_GROUPS = {"unicorn": UNICORN_RECIPES, "unix": UNIX_RECIPES}
OWN_LABS = (*UNICORN_RECIPES, *GENIXER_RECIPES, *UNIX_RECIPES)  # recipe names whose lab module trains them


def recipe_path(name: str) -> Path:
    return shipped_recipe(RECIPES[name])


def run_lab(config: LabConfig) -> dict[str, Any]:
    from vlmforge.manifest import read_manifest
    from vlmforge.shapes.foundation.build import build_foundation, foundation_spec
    from vlmforge.shapes.world import WorldConfig, build_world

    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    world = build_world(
        WorldConfig(seed=config.world_seed, train_size=config.train_images, test_size=config.test_images),
        out / "world",
    )
    timings["world"] = time.perf_counter() - tick

    tick = time.perf_counter()
    foundation = build_foundation(
        world.root, config.foundation_dir or out / "foundation", foundation_spec(config.foundation_overrides)
    )
    timings["foundation"] = time.perf_counter() - tick

    from vlmforge.shapes.lab.blind import question_only_baseline

    per_recipe: dict[str, Any] = {}
    # ${records}: the folder of the recipe's training records (the Unicorn recipes point it at their text-only
    # copies), so one `--set stages.finetune.data.path=${records}/instruct.jsonl` serves every lab recipe
    variables = {"world": str(world.root), "foundation": str(foundation.root), "records": str(world.root / "train")}
    blind = question_only_baseline(world.root)
    for name in config.recipes:
        if name in OWN_LABS:
            continue  # trained below by their own lab modules
        jobs = [(f"{name}-seed{seed}", (config, name, recipe_path(name), seed, world.root, variables))
                for seed in config.seeds]  # fmt: skip
        runs = run_side_by_side(train_and_evaluate, jobs, workers=config.workers, logs=out / "logs", label=name)
        per_recipe[name] = {"runs": runs, "summary": summarize(runs, blind),
                            "paraphrased": summarize(runs, key="paraphrased")}  # fmt: skip
    method_labs = _run_method_labs(config, world.root, foundation.root, variables, blind, per_recipe)

    from vlmforge.shapes.lab.report import write_lab_report

    manifest = read_manifest(foundation.root) or {}
    lm_manifest = manifest.get("lm", {})
    results = {
        "world": str(world.root),
        "foundation": {
            "path": str(foundation.root),
            "build_id": manifest.get("build_id"),
            "reused": foundation.reused,
            # The LM's held-out reading before any image: a type it did not learn there, the lab does not learn.
            "reading_test": lm_manifest.get("object_reading_accuracy"),
            # False when every start of the reading phase missed its pass marks (docs/foundation.md).
            "reader_passed": (lm_manifest.get("reader") or {}).get("passed"),
        },
        "seeds": list(config.seeds),
        "question_only_baseline": blind,
        "recipes": per_recipe,
        **method_labs,
        "timings_seconds": {**timings, "total": time.perf_counter() - started},
    }
    results = with_earlier_rows(results, out / "results.json")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_lab_report(results, out)
    return results


METHOD_SECTIONS = ("unicorn", "unix", "genixer")


def with_earlier_rows(results: dict[str, Any], earlier_file: Path) -> dict[str, Any]:
    """``results`` plus the recipes and method sections of an earlier run into the same folder that this run did
    not repeat, so `vlmforge demo --recipes genixer` after `vlmforge demo` reports both, not only the last one.

    Only rows made from the same world and the same build of the foundation models are kept: rows of other
    foundation models would be reported next to these as if comparable."""
    if not earlier_file.is_file():
        return results
    earlier = json.loads(earlier_file.read_text())
    build = results["foundation"]["build_id"]
    earlier_build = (earlier.get("foundation") or {}).get("build_id")
    if build is None or earlier_build != build or earlier.get("world") != results["world"]:
        return results
    merged = {**results, "recipes": {**earlier.get("recipes", {}), **results["recipes"]}}
    for section in METHOD_SECTIONS:
        if section not in merged and section in earlier:
            merged[section] = earlier[section]
    return merged


def _run_method_labs(
    config: LabConfig,
    world_root: Path,
    foundation_root: Path,
    variables: dict[str, str],
    blind: dict,
    per_recipe: dict[str, Any],
) -> dict[str, Any]:
    """Run the lab groups that train their own recipes (Unicorn, Uni-X, Genixer); their runs join ``per_recipe``,
    and each group's own results come back under its name."""
    results: dict[str, Any] = {}
    if any(name in UNICORN_RECIPES for name in config.recipes):
        from vlmforge.shapes.lab.unicorn import run_unicorn

        names = [name for name in config.recipes if name in UNICORN_RECIPES]
        unicorn_runs, results["unicorn"] = run_unicorn(config, world_root, foundation_root, names, variables, blind)
        per_recipe.update(unicorn_runs)
    if any(name in UNIX_RECIPES for name in config.recipes):
        from vlmforge.shapes.lab.unix import run_unix

        unix_runs, results["unix"] = run_unix(config, world_root, foundation_root, variables, blind)
        per_recipe.update(unix_runs)
    if any(name in GENIXER_RECIPES for name in config.recipes):
        from vlmforge.shapes.lab.genixer import run_genixer

        results["genixer"] = run_genixer(config, world_root, foundation_root)
    return {name: value for name, value in results.items() if value}


def expand_recipes(names: str | Sequence[str]) -> tuple[str, ...]:
    """'bunny,unicorn' -> the lab's recipe names ('unicorn' is its four recipes); an unknown name is a ConfigError."""
    from vlmforge.errors import ConfigError

    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    out: list[str] = []
    for name in items:
        group = RECIPE_GROUPS.get(name, (name,))
        unknown = [n for n in group if n not in RECIPES and n not in OWN_LABS]
        if unknown:
            raise ConfigError(
                f"unknown lab recipe '{name}'; choose from {', '.join([*RECIPES, *RECIPE_GROUPS, *OWN_LABS])}"
            )
        out += [n for n in group if n not in out]
    return tuple(out)
