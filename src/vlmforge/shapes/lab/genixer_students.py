"""The Genixer lab's students: L alone, and L plus each selection of the synthetic samples, over several seeds,
evaluated on the default world's held-out test images.

The judge-band arms and their random control are cut to one size N, the smallest band's, so a difference
between them is the samples' quality and not their number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmforge.data.records import load_records
from vlmforge.shapes.lab.config import LabConfig
from vlmforge.shapes.lab.genixer_metrics import BANDS
from vlmforge.shapes.lab.recipe_runs import LAB_TASKS, summarize

ARMS = ("L", "all", "all_boxfiltered", "low", "medium", "high", "random", "oracle")
# The Genixer tasks the held-out test asks (colour/shape/count/position, existence, multiple choice, REC): students
# train on these only, of L and of the samples, so their training time goes to what is measured.
STUDENT_TASKS = ("common_vqa", "adversarial_vqa", "mc_vqa", "rec")


def student_records(source: Path, out: Path) -> Path:
    """``source``'s records of the student tasks (world task names mapped to Genixer's), written to ``out``."""
    from vlmforge.data.records import save_records
    from vlmforge.synth.genixer.tasks import canonical_task

    save_records([r for r in load_records(source) if canonical_task(r.get("task")) in STUDENT_TASKS], out)
    return out


def band_size(records: list[dict[str, Any]]) -> int:
    """N: the number of samples in the smallest judge band."""
    from vlmforge.synth.genixer.select import select_band

    return min(len(select_band(records, lo, hi)) for lo, hi in BANDS.values())


def arm_data(root: Path, synthetic: dict[str, Any], labeled: Path, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each arm's training records (``root/arms/ARM/train.jsonl``, L first; student tasks only) and its number of
    synthetic ones; the equal-size arms hold N each, N being the smallest band's size."""
    from vlmforge.synth.genixer.stages import select_stage

    paths = {k: student_records(p, root / "students" / p.name) for k, p in synthetic["paths"].items()}
    labeled = student_records(labeled, root / "students" / "L.jsonl")
    n = band_size(load_records(paths["all"]))
    plans: dict[str, tuple[Path, dict[str, Any]]] = {
        "all": (paths["all"], {}),
        "all_boxfiltered": (paths["filtered"], {}),
        **{band: (paths["all"], {"band": f"{lo}:{hi}", "n": n}) for band, (lo, hi) in BANDS.items()},
        "random": (paths["all"], {"random_n": n}),
        "oracle": (paths["correct"], {}),
    }
    arms: dict[str, dict[str, Any]] = {"L": {"path": labeled, "synthetic": 0}}
    for arm, (source, rule) in plans.items():
        if n == 0 and arm in (*BANDS, "random"):
            continue  # an empty band: the equal-size arms cannot be made
        manifest = select_stage(source, root / "arms" / arm, labeled=labeled, seed=seed, **rule)
        arms[arm] = {"path": root / "arms" / arm / "train.jsonl", "synthetic": manifest["counts"]["selected"]}
    return arms


def run_students(
    config: LabConfig,
    root: Path,
    data: Path,
    world_root: Path,
    variables: dict[str, str],
    stage1: dict[int, Path],
    synthetic: dict[str, Any],
    settings: Any,
) -> dict[str, Any]:
    """Train and evaluate every arm with every seed, each from its seed's stage 1 (``stage1``); per arm: its
    synthetic count, runs and per-task summary."""
    from vlmforge.shapes.lab.recipe_runs import shipped_recipe, train_and_evaluate
    from vlmforge.shapes.lab.side_by_side import run_side_by_side

    recipe, plans = shipped_recipe("shapes-genixer.yaml"), arm_data(root, synthetic, data / "L/instruct.jsonl")
    jobs = [
        (f"genixer-{arm}-seed{seed}", (
            config, f"genixer-{arm}", recipe, seed, world_root,
            {**variables, "stage1": str(stage1[seed]), "records": str(plan["path"])},
            [f"stages.finetune.epochs={settings.student_epochs}"], None, LAB_TASKS, (), settings.eval_questions,
        ))
        for arm, plan in plans.items() for seed in settings.seeds
    ]  # fmt: skip
    runs = run_side_by_side(train_and_evaluate, jobs, workers=settings.workers, logs=root / "logs", label="students")
    out, per_arm = {}, len(settings.seeds)
    for i, (arm, plan) in enumerate(plans.items()):
        arm_runs = runs[i * per_arm : (i + 1) * per_arm]
        out[arm] = {"synthetic": plan["synthetic"], "runs": arm_runs, "summary": summarize(arm_runs)}
    return out
