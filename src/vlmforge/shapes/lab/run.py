"""The shapes lab: world -> foundation models -> recipes x seeds -> evaluation on held-out images -> report.

Everything here is orchestration over the public pieces (``build_world``, ``build_foundation``, ``run_recipe``,
``evaluate``); the lab has no code path of its own inside them. Reruns reuse finished work: the world and the
foundation models are cached, finished stages are skipped, finished predictions are reused -- each only if made
from the same inputs (freshness.py: work from other foundation models, settings or weights goes to OUT/stale/).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vlmforge.shapes.lab.freshness import run_fresh, weights_digest
from vlmforge.shapes.lab.unicorn import RECIPE_NAMES as UNICORN_RECIPES

LAB_TASKS = (
    "shapes_color",
    "shapes_shape",
    "shapes_count",
    "shapes_position",
    "shapes_exist",
    "shapes_mc",
    "shapes_rec",
)
# The same test questions in phrasings no training record uses (world/phrasings.py): reported as their own rows.
PARAPHRASED_TASKS = tuple(f"shapes_paraphrased_{t}" for t in ("color", "shape", "count", "position", "exist"))
RECIPES = {"bunny": "shapes-bunny.yaml"}
RECIPE_GROUPS = {"unicorn": UNICORN_RECIPES}  # `--recipes unicorn` = its four recipes


@dataclass
class LabConfig:
    out: Path
    seeds: tuple[int, ...] = (0, 1, 2)
    recipes: tuple[str, ...] = ("bunny",)
    foundation_dir: Path | None = None  # default: OUT/foundation (reused when its manifest matches)
    train_images: int = 3000
    test_images: int = 300
    world_seed: int = 0
    foundation_overrides: dict[str, Any] = field(default_factory=dict)
    recipe_overrides: tuple[str, ...] = ()
    eval_batch_size: int = 64
    eval_max_new_tokens: int | None = None  # None: each task's own limit (tests cap it for speed)

    @classmethod
    def quick(cls, out: Path, **kwargs) -> LabConfig:
        """A small lab for CI: one seed, a smaller world, shorter training. Numbers are noisier, not meaningful."""
        defaults = dict(
            seeds=(0,), train_images=600, test_images=60,
            # One reading attempt: 60 steps never meet the pass marks, so restarts would only triple the time.
            foundation_overrides={"vision.epochs": 3, "reader.steps": 60, "reader.attempts": 1, "holdout": 64},
            recipe_overrides=("stages.finetune.epochs=1",),
        )  # fmt: skip
        defaults.update(kwargs)
        return cls(out=out, **defaults)

    @classmethod
    def long(cls, out: Path, **kwargs) -> LabConfig:
        """The default lab with a longer box phase that also teaches multiple choice (``LONG_FOUNDATION``)."""
        overrides = {**LONG_FOUNDATION, **kwargs.pop("foundation_overrides", {})}
        return cls(out=out, foundation_overrides=overrides, **kwargs)


# What the ten minutes of the default lab leave out: boxes and multiple choice need thousands of steps of their
# own in the reader (docs/bunny.md item 32). 4000 box-phase steps, 20 of every 32 samples multiple choice with
# fresh options and 8 referring expressions: the reader's held-out mc rose from 0.47 after 2000 such steps to
# 0.93 after 4000, boxes from 0.13 (the default) to 0.30. About seven minutes more on 2 CPU cores.
LONG_FOUNDATION: dict[str, Any] = {"reader.box_steps": 4000, "reader.mc_fraction": 0.625, "reader.box_fraction": 0.25}


def recipe_path(name: str) -> Path:
    return Path(str(resources.files("vlmforge.shapes") / "recipes" / RECIPES[name]))


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
        if name in UNICORN_RECIPES:
            continue  # trained below, after their shared caption-embedding stores are prepared
        runs = [
            train_and_evaluate(config, name, recipe_path(name), seed, world.root, variables) for seed in config.seeds
        ]
        per_recipe[name] = {"runs": runs, "summary": summarize(runs, blind),
                            "paraphrased": summarize(runs, key="paraphrased")}  # fmt: skip
    unicorn = None
    if any(name in UNICORN_RECIPES for name in config.recipes):
        from vlmforge.shapes.lab.unicorn import run_unicorn

        names = [name for name in config.recipes if name in UNICORN_RECIPES]
        unicorn_runs, unicorn = run_unicorn(config, world.root, foundation.root, names, variables, blind)
        per_recipe.update(unicorn_runs)

    from vlmforge.shapes.lab.report import write_lab_report

    lm_manifest = (read_manifest(foundation.root) or {}).get("lm", {})
    results = {
        "world": str(world.root),
        "foundation": {
            "path": str(foundation.root),
            "reused": foundation.reused,
            # The LM's held-out reading before any image: a type it did not learn there, the lab does not learn.
            "reading_test": lm_manifest.get("object_reading_accuracy"),
            # False when every start of the reading phase missed its pass marks (docs/foundation.md).
            "reader_passed": (lm_manifest.get("reader") or {}).get("passed"),
        },
        "seeds": list(config.seeds),
        "question_only_baseline": blind,
        "recipes": per_recipe,
        **({"unicorn": unicorn} if unicorn else {}),
        "timings_seconds": {**timings, "total": time.perf_counter() - started},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_lab_report(results, out)
    return results


def expand_recipes(names: str | Sequence[str]) -> tuple[str, ...]:
    """'bunny,unicorn' -> the lab's recipe names ('unicorn' is its four recipes); an unknown name is a ConfigError."""
    from vlmforge.errors import ConfigError

    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    out: list[str] = []
    for name in items:
        group = RECIPE_GROUPS.get(name, (name,))
        unknown = [n for n in group if n not in RECIPES and n not in UNICORN_RECIPES]
        if unknown:
            raise ConfigError(
                f"unknown lab recipe '{name}'; choose from {', '.join([*RECIPES, *RECIPE_GROUPS, *UNICORN_RECIPES])}"
            )
        out += [n for n in group if n not in out]
    return tuple(out)


def train_and_evaluate(
    config: LabConfig,
    name: str,
    recipe_file: Path,
    seed: int,
    world_root: Path,
    variables: dict[str, str],
    overrides: Sequence[str] = (),
    before_eval: Callable[[Path], Any] | None = None,
) -> dict[str, Any]:
    """Train one recipe with one seed (finished stages are reused) and evaluate it on the held-out test images.
    ``overrides`` come before the lab's own (``config.recipe_overrides``); ``before_eval(final_dir)`` runs between
    training and evaluation (e.g. test-time calibration)."""
    from vlmforge.manifest import read_manifest
    from vlmforge.train.recipe import load_recipe
    from vlmforge.train.stage import run_recipe

    run_dir = Path(config.out) / "runs" / f"{name}-seed{seed}"
    settings = [f"output_dir={run_dir}", f"seed={seed}", *overrides, *config.recipe_overrides]
    recipe = load_recipe(recipe_file, settings, variables=variables)
    foundation = read_manifest(Path(variables["foundation"])) or {}
    inputs = {"foundation_build": foundation.get("build_id"), "recipe": str(recipe_file), "settings": settings}
    final = run_fresh(Path(config.out), run_dir, inputs, lambda: run_recipe(recipe, resume=True))
    if before_eval is not None:
        before_eval(final)
    # Each stage's manifest holds the wall time of the run that trained it, so reused stages report it too.
    train_seconds = sum(read_manifest(run_dir / stage)["wall_seconds"] for stage in recipe.stages)
    return evaluate_on_test(config, f"{name}-seed{seed}", final, world_root, seed, train_seconds)


def evaluate_on_test(
    config: LabConfig, label: str, model_dir: Path, world_root: Path, seed: int, train_seconds: float
) -> dict[str, Any]:
    """Evaluate a trained model on every lab task over the world's held-out test images (into OUT/eval/LABEL);
    returns the lab's run record."""
    from vlmforge.eval.runner import evaluate
    from vlmforge.runtime import load_generator

    tick = time.perf_counter()
    eval_dir = Path(config.out) / "eval" / label
    inputs = {"model": str(model_dir), "weights": weights_digest(model_dir)}
    generator = load_generator(model_dir, batch_size=config.eval_batch_size)
    results = run_fresh(Path(config.out), eval_dir, inputs, lambda: evaluate(
        generator, (*LAB_TASKS, *PARAPHRASED_TASKS), eval_dir, batch_size=config.eval_batch_size,
        max_new_tokens=config.eval_max_new_tokens,
        data={"world": str(world_root), "world_split": "test"},
        model={"name": label, "path": str(model_dir)}, progress=True,
    ))  # fmt: skip
    tasks = {name: results["tasks"][name] for name in LAB_TASKS}
    paraphrased = {name: results["tasks"][name] for name in PARAPHRASED_TASKS}
    return {"seed": seed, "model": str(model_dir), "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - tick, "tasks": tasks, "paraphrased": paraphrased}  # fmt: skip


def task_accuracy(task_result: dict[str, Any]) -> tuple[float, int]:
    """The accuracy-like headline of a task (accuracy, or Acc@0.5 for boxes) and its number of questions."""
    metrics = task_result["metrics"]
    headline = metrics.get("accuracy") or metrics[task_result["primary"]]
    return float(headline["value"]), int(headline.get("n") or task_result.get("n_questions") or 0)


def summarize(
    runs: list[dict[str, Any]], question_only: dict[str, float] | None = None, key: str = "tasks"
) -> dict[str, Any]:
    """Per question type: mean accuracy over seeds, its standard error, chance level, the question-only baseline
    (``question_only``, see :mod:`vlmforge.shapes.lab.blind`; None where a type has none), questions per seed. ``key``
    picks the runs' results: "tasks" (the canonical test questions) or "paraphrased" (held-out phrasings)."""
    summary = {}
    if not all(key in run for run in runs):
        return summary  # runs evaluated without that key's tasks have no such rows
    for task in runs[0][key]:
        values = [task_accuracy(run[key][task])[0] for run in runs]
        mean = sum(values) / len(values)
        se = (
            math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
            if len(values) > 1
            else None
        )
        kind = task.removeprefix("shapes_").removeprefix("paraphrased_")
        summary[kind] = {
            "mean": mean, "se": se, "per_seed": values, "chance": runs[0][key][task].get("chance"),
            "n": task_accuracy(runs[0][key][task])[1], "question_only": (question_only or {}).get(kind),
        }  # fmt: skip
    return summary
