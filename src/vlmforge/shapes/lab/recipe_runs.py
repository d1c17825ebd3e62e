"""One recipe with one seed: train it (finished stages reused), evaluate it on the world's held-out test images,
and summarise the runs of all seeds per question type."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from vlmforge.shapes.lab.config import LabConfig
from vlmforge.shapes.lab.freshness import run_fresh, weights_digest

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


def shipped_recipe(filename: str) -> Path:
    """A recipe shipped in ``vlmforge/shapes/recipes/``."""
    return Path(str(resources.files("vlmforge.shapes") / "recipes" / filename))


def train_and_evaluate(
    config: LabConfig,
    name: str,
    recipe_file: Path,
    seed: int,
    world_root: Path,
    variables: dict[str, str],
    overrides: Sequence[str] = (),
    before_eval: Callable[[Path], Any] | None = None,
    tasks: Sequence[str] = LAB_TASKS,
    paraphrased: Sequence[str] = PARAPHRASED_TASKS,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train one recipe with one seed (finished stages are reused) and evaluate it on the held-out test images.
    ``overrides`` come before the lab's own (``config.recipe_overrides``); ``before_eval(final_dir)`` runs between
    training and evaluation (e.g. test-time calibration); ``tasks``, ``paraphrased`` and ``limit`` go to
    ``evaluate_on_test``."""
    final, train_seconds = train_run(config, name, recipe_file, seed, variables, overrides)
    if before_eval is not None:
        before_eval(final)
    return evaluate_on_test(
        config, f"{name}-seed{seed}", final, world_root, seed, train_seconds, tasks, paraphrased, limit
    )


def train_run(
    config: LabConfig,
    name: str,
    recipe_file: Path,
    seed: int,
    variables: dict[str, str],
    overrides: Sequence[str] = (),
) -> tuple[Path, float]:
    """Train one recipe with one seed into OUT/runs/NAME-seedS (finished stages reused): its final model folder
    and the training wall time recorded when its stages ran."""
    from vlmforge.manifest import read_manifest
    from vlmforge.train.recipe import load_recipe
    from vlmforge.train.stage import run_recipe

    run_dir = Path(config.out) / "runs" / f"{name}-seed{seed}"
    settings = [f"output_dir={run_dir}", f"seed={seed}", *overrides, *config.recipe_overrides]
    recipe = load_recipe(recipe_file, settings, variables=variables)
    foundation = read_manifest(Path(variables["foundation"])) or {}
    inputs = {"foundation_build": foundation.get("build_id"), "recipe": str(recipe_file), "settings": settings}
    final = run_fresh(Path(config.out), run_dir, inputs, lambda: run_recipe(recipe, resume=True))
    # Each stage's manifest holds the wall time of the run that trained it, so reused stages report it too.
    return final, sum(read_manifest(run_dir / stage)["wall_seconds"] for stage in recipe.stages)


def evaluate_on_test(
    config: LabConfig,
    label: str,
    model_dir: Path,
    world_root: Path,
    seed: int,
    train_seconds: float,
    tasks: Sequence[str] = LAB_TASKS,
    paraphrased: Sequence[str] = PARAPHRASED_TASKS,
    limit: int | None = None,
) -> dict[str, Any]:
    """Evaluate a trained model on ``tasks`` and ``paraphrased`` (default: every lab task) over the world's held-out
    test images, the first ``limit`` questions of each (default: all), into OUT/eval/LABEL; returns the lab's run
    record."""
    from vlmforge.eval.generator import load_generator
    from vlmforge.eval.runner import evaluate

    tick = time.perf_counter()
    eval_dir = Path(config.out) / "eval" / label
    inputs = {"model": str(model_dir), "weights": weights_digest(model_dir), **({"limit": limit} if limit else {})}
    generator = load_generator(model_dir, batch_size=config.eval_batch_size)
    results = run_fresh(Path(config.out), eval_dir, inputs, lambda: evaluate(
        generator, (*tasks, *paraphrased), eval_dir, batch_size=config.eval_batch_size,
        max_new_tokens=config.eval_max_new_tokens, limit=limit,
        data={"world": str(world_root), "world_split": "test"},
        model={"name": label, "path": str(model_dir)}, progress=True,
    ))  # fmt: skip
    return {"seed": seed, "model": str(model_dir), "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - tick,
            "tasks": {name: results["tasks"][name] for name in tasks},
            "paraphrased": {name: results["tasks"][name] for name in paraphrased}}  # fmt: skip


def task_accuracy(task_result: dict[str, Any]) -> tuple[float, int]:
    """The accuracy-like headline of a task (accuracy, or Acc@0.5 for boxes) and its number of questions."""
    metrics = task_result["metrics"]
    headline = metrics.get("accuracy") or metrics[task_result["primary"]]
    return float(headline["value"]), int(headline.get("n") or task_result.get("n_questions") or 0)


def mean_and_se(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean over seeds and its standard error (None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


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
        mean, se = mean_and_se(values)
        kind = task.removeprefix("shapes_").removeprefix("paraphrased_")
        summary[kind] = {
            "mean": mean, "se": se, "per_seed": values, "chance": runs[0][key][task].get("chance"),
            "n": task_accuracy(runs[0][key][task])[1], "question_only": (question_only or {}).get(kind),
        }  # fmt: skip
    return summary
