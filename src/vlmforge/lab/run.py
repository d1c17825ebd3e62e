"""The shapes lab: world -> foundation models -> recipes x seeds -> evaluation on held-out images -> report.

Everything here is orchestration over the public pieces (``build_world``, ``build_foundation``, ``run_recipe``,
``evaluate``); the lab has no code path of its own inside them. Reruns reuse finished work: the world and the
foundation models are cached, finished stages are skipped, finished predictions are reused.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

LAB_TASKS = ("shapes_color", "shapes_shape", "shapes_count", "shapes_position", "shapes_exist", "shapes_mc", "shapes_rec")
RECIPES = {"bunny": "shapes-bunny.yaml"}


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

    @classmethod
    def quick(cls, out: Path, **kwargs) -> LabConfig:
        """A small lab for CI: one seed, a smaller world, shorter training. Numbers are noisier, not meaningful."""
        defaults = dict(
            seeds=(0,), train_images=600, test_images=60,
            foundation_overrides={"lm.steps": 60, "vision.epochs": 3, "holdout": 64},
            recipe_overrides=("stages.finetune.epochs=1",),
        )  # fmt: skip
        defaults.update(kwargs)
        return cls(out=out, **defaults)


def recipe_path(name: str) -> Path:
    return Path(str(resources.files("vlmforge") / "recipes" / RECIPES[name]))


def _foundation_spec(overrides: dict[str, Any]):
    from vlmforge.models.foundation.build import FoundationSpec

    spec = FoundationSpec()
    for key, value in overrides.items():
        target, *rest = key.split(".")
        obj = getattr(spec, target) if rest else spec
        setattr(obj, rest[0] if rest else target, value)
    return spec


def run_lab(config: LabConfig) -> dict[str, Any]:
    from vlmforge.eval.runner import evaluate
    from vlmforge.models.foundation.build import build_foundation
    from vlmforge.runtime import load_generator
    from vlmforge.train.recipe import load_recipe
    from vlmforge.train.stage import run_recipe
    from vlmforge.world import WorldConfig, build_world

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
        world.root, config.foundation_dir or out / "foundation", _foundation_spec(config.foundation_overrides)
    )
    timings["foundation"] = time.perf_counter() - tick

    per_recipe: dict[str, Any] = {}
    for name in config.recipes:
        runs = []
        for seed in config.seeds:
            tick = time.perf_counter()
            run_dir = out / "runs" / f"{name}-seed{seed}"
            recipe = load_recipe(
                recipe_path(name),
                [f"output_dir={run_dir}", f"seed={seed}", *config.recipe_overrides],
                variables={"world": str(world.root), "foundation": str(foundation.root)},
            )
            final = run_recipe(recipe, resume=True)
            train_seconds = time.perf_counter() - tick
            tick = time.perf_counter()
            generator = load_generator(final, batch_size=config.eval_batch_size)
            results = evaluate(
                generator, LAB_TASKS, out / "eval" / f"{name}-seed{seed}", batch_size=config.eval_batch_size,
                data={"world": str(world.root), "world_split": "test"},
                model={"name": f"{name}-seed{seed}", "path": str(final)}, progress=True,
            )  # fmt: skip
            runs.append({"seed": seed, "model": str(final), "train_seconds": train_seconds,
                         "eval_seconds": time.perf_counter() - tick, "tasks": results["tasks"]})  # fmt: skip
        per_recipe[name] = {"runs": runs, "summary": summarize(runs)}

    from vlmforge.lab.report import write_lab_report

    results = {
        "world": str(world.root),
        "foundation": {"path": str(foundation.root), "reused": foundation.reused},
        "seeds": list(config.seeds),
        "recipes": per_recipe,
        "timings_seconds": {**timings, "total": time.perf_counter() - started},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_lab_report(results, out)
    return results


def task_accuracy(task_result: dict[str, Any]) -> tuple[float, int]:
    """The accuracy-like headline of a task (accuracy, or Acc@0.5 for boxes) and its number of questions."""
    metrics = task_result["metrics"]
    headline = metrics.get("accuracy") or metrics[task_result["primary"]]
    return float(headline["value"]), int(headline.get("n") or task_result.get("n_questions") or 0)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per question type: mean accuracy over seeds, its standard error, chance level, questions per seed."""
    summary = {}
    for task in runs[0]["tasks"]:
        values = [task_accuracy(run["tasks"][task])[0] for run in runs]
        mean = sum(values) / len(values)
        se = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) if len(values) > 1 else None
        summary[task.removeprefix("shapes_")] = {
            "mean": mean, "se": se, "per_seed": values, "chance": runs[0]["tasks"][task].get("chance"),
            "n": task_accuracy(runs[0]["tasks"][task])[1],
        }  # fmt: skip
    return summary
