"""`vlmforge demo --recipes genixer`: does Genixer's synthetic data help, is the medium judge band best, and does
the box filter help REC -- measured in a world that knows the truth of every generated sample.

On top of the default lab (its world, foundation models and Bunny model): L, a labeled fraction of the world's
train images with all nine Genixer tasks; a pool of unlabeled images from a second world (another seed, scenes
the first world holds dropped); a stage 1 per seed on the world's captions (the projector alone, as LLaVA-1.5's
stage-1 checkpoint that Genixer builds on); a generator trained from it on L writes samples for the pool, which
are parsed, judged (the Bunny model taught the judge's question on L) and box-filtered (the foundation tower +
MiniLM). Each sample is checked against the pool scene (genixer_truth.py). Students trained from their seed's
stage 1 on L plus each selection are evaluated on the default world's held-out test images over several seeds.
Every step reuses finished work (the stages' own resume, freshness.py for the models).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vlmforge.shapes.lab.config import LabConfig
from vlmforge.shapes.lab.recipe_runs import shipped_recipe

RECIPE_NAMES = ("genixer",)


@dataclass
class GenixerSettings:
    """Sizes of the Genixer lab, chosen for its time budget on top of a finished default lab."""

    labeled_fraction: float = 0.2
    pool_images: int = 400
    generator_epochs: float = 1.0
    # The generator writes long structured outputs (options, boxes, dialogues); at the students' rate it has not
    # learned their format by the end of its pass.
    generator_lr: float = 3e-3
    judge_epochs: float = 0.5
    student_epochs: float = 0.4
    eval_questions: int | None = 100  # per test task: the first N questions (a multiple-choice item's rotations kept)
    max_new_tokens: int = 192
    batch_size: int = 64
    # The students (short single-question records) train this many at a time, each with its share of the threads:
    # their matrices are too small to keep several threads busy (shapes/lab/side_by_side.py). The generator's and
    # the judge's long records do use them, so those two run one after the other.
    workers: int = 2
    recall: float = 0.9  # of L's REC/REG pairs kept by the calibrated box filter
    min_box: float = 0.05  # a box's shorter side, as a fraction of the image
    seeds: tuple[int, ...] = (0, 1, 2)

    @classmethod
    def for_lab(cls, config: LabConfig) -> GenixerSettings:
        """The default sizes, or tiny ones when the lab itself is a quick one (a small world)."""
        if config.train_images >= 3000:
            return cls(seeds=tuple(config.seeds))
        return cls(pool_images=max(8, config.train_images // 10), max_new_tokens=48, seeds=tuple(config.seeds))


class _Clock:
    """Wall and CPU seconds per step (CPU time of this process and of its finished worker processes, all
    threads): the machine may be shared."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float]] = {}

    @staticmethod
    def _cpu() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def run(self, name: str, work: Any) -> Any:
        wall, cpu = time.perf_counter(), self._cpu()
        result = work()
        self.steps[name] = {"wall": time.perf_counter() - wall, "cpu": self._cpu() - cpu}
        return result


def _train(config: LabConfig, name: str, recipe: str, variables: dict[str, str], overrides: list[str]) -> Path:
    """Train one lab model into OUT/runs/NAME (finished stages reused when made from the same inputs)."""
    from vlmforge.manifest import read_manifest
    from vlmforge.shapes.lab.freshness import run_fresh
    from vlmforge.train.recipe import load_recipe
    from vlmforge.train.stage import run_recipe

    run_dir = Path(config.out) / "runs" / name
    settings = [f"output_dir={run_dir}", *overrides]
    loaded = load_recipe(shipped_recipe(recipe), settings, variables=variables)
    foundation = read_manifest(Path(variables["foundation"])) or {}
    inputs = {"foundation_build": foundation.get("build_id"), "recipe": recipe, "settings": settings}
    return run_fresh(Path(config.out), run_dir, inputs, lambda: run_recipe(loaded, resume=True))


def _stage1(config: LabConfig, seed: int, foundation_root: Path, world: Path) -> Path:
    """The stage-1 checkpoint of ``seed``: the default lab's Bunny stage 1 when it was trained on these foundation
    models (the same stage on the same captions), else this lab's own (shapes-genixer-stage1.yaml)."""
    from vlmforge.manifest import read_manifest
    from vlmforge.provenance import read_inputs
    from vlmforge.shapes.lab.freshness import INPUTS_JSON

    bunny = Path(config.out) / "runs" / f"bunny-seed{seed}"
    build = (read_manifest(foundation_root) or {}).get("build_id")
    made_from = read_inputs(bunny, INPUTS_JSON) or {}
    if (bunny / "pretrain" / "final").is_dir() and build and made_from.get("foundation_build") == build:
        return bunny / "pretrain" / "final"
    variables = {"foundation": str(foundation_root), "world": str(world)}
    return _train(config, f"genixer-stage1-seed{seed}", "shapes-genixer-stage1.yaml", variables, [f"seed={seed}"])


def run_genixer(config: LabConfig, world_root: Path, foundation_root: Path) -> dict[str, Any]:
    """The whole Genixer lab; returns its results (also written to OUT/genixer/results.json)."""
    from vlmforge.shapes.lab import genixer_data as data_
    from vlmforge.shapes.lab.genixer_synthetic import make_synthetic
    from vlmforge.synth.genixer.stages import build_stage

    settings, clock = GenixerSettings.for_lab(config), _Clock()
    root = Path(config.out) / "genixer"
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    base = json.loads((world_root / "world.json").read_text())["config"]
    from vlmforge.shapes.world import WorldConfig

    base_config = WorldConfig(**base)
    labeled_world = clock.run("worlds", lambda: data_.world_with_grounding(
        base_config, root / "world", seed=base_config.seed, train_size=base_config.train_size))  # fmt: skip
    pool_world = data_.world_with_grounding(
        WorldConfig(**{**base, "test_size": 1}), root / "pool_world", seed=base_config.seed + 1,
        train_size=settings.pool_images)  # fmt: skip
    labeled = data_.labeled_fraction(labeled_world, settings.labeled_fraction, data)
    pool = data_.build_pool(labeled_world, pool_world, data)
    variables = {"foundation": str(foundation_root), "data": str(data)}
    stage1 = clock.run(
        "stage 1",
        lambda: {seed: _stage1(config, seed, foundation_root, labeled_world) for seed in sorted({0, *settings.seeds})},
    )

    build = build_stage(data / "L/instruct.jsonl", root / "build", image_folder=data, mode="specific", seed=0)
    generator = clock.run("generator", lambda: _train(
        config, "genixer-generator", "shapes-genixer.yaml",
        {**variables, "stage1": str(stage1[0]), "records": str(root / "build/generator.jsonl")},
        ["seed=0", f"stages.finetune.epochs={settings.generator_epochs}",
         f"stages.finetune.learning_rate={settings.generator_lr}"]))  # fmt: skip
    bunny = Path(config.out) / "runs" / "bunny-seed0" / "finetune" / "final"
    judge_init = bunny if bunny.is_dir() else generator
    lessons = data_.judge_lessons(data / "L/instruct.jsonl", labeled_world, root / "judge_lessons.jsonl")
    judge = clock.run("judge model", lambda: _train(
        config, "genixer-judge", "shapes-genixer-judge.yaml",
        {**variables, "judge_init": str(judge_init), "records": str(root / "judge_lessons.jsonl")},
        ["seed=0", f"stages.finetune.epochs={settings.judge_epochs}"]))  # fmt: skip
    synthetic = make_synthetic(
        root, data, generator, judge, foundation_root, labeled_world, pool, settings, clock
    )  # the pool's samples: generated, parsed, judged, checked, box-filtered
    from vlmforge.shapes.lab.genixer_students import run_students

    arms = clock.run(
        "students", lambda: run_students(config, root, data, world_root, variables, stage1, synthetic, settings)
    )
    results = {
        "settings": asdict(settings),
        "labeled": {"images": len(labeled["images"]), "records": labeled["counts"]},
        "pool": {"images": len(pool["scenes"]), "duplicates_dropped": pool["duplicates_dropped"]},
        "generator": {"model": str(generator), "records": build["counts"]["written"]},
        "judge": {"model": str(judge), "init": str(judge_init), "lessons": lessons},
        **synthetic["results"],
        "arms": arms,
        "timings": clock.steps,
    }
    (root / "results.json").write_text(json.dumps(results, indent=2))
    return results
