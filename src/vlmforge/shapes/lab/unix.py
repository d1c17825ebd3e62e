"""The Uni-X lab (``vlmforge demo --recipes unix``): the foundation LM made a unified model that reads and draws
the world's images, as the ``shared`` arm and the ``two_end`` arm (its first and last layer split per modality)
at equal active parameters, each over the lab's seeds.

Per model: understanding accuracy per question type through the eval runner (as the bunny rows), modality
conflict in the shared middle layers at initialisation and after training, the held-out text loss, and the exact
GenEval of images drawn for held-out captions at each CFG scale against the patch tokenizer's round-trip ceiling.
Finished work is reused only when made from the same inputs (``freshness.run_fresh``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from vlmforge.shapes.lab.config import LabConfig
from vlmforge.shapes.lab.recipe_runs import mean_and_se

RECIPE = "shapes-unix.yaml"
ARM_OVERRIDES = {
    "shared": ("model.unified.arm=shared", "model.unified.encode_layers=0", "model.unified.decode_layers=0"),
    "two_end": (),
}
RECIPE_NAMES = tuple(f"unix-{arm}" for arm in ARM_OVERRIDES)
# The exact-match question types, each scored on its first questions_per_type test questions: a unified model
# reads every image as 258 tokens, which makes the whole test set cost more than the lab's time budget.
UNDERSTANDING = ("shapes_color", "shapes_shape", "shapes_count", "shapes_position", "shapes_exist")


@dataclass(frozen=True)
class UnixSettings:
    """How much the lab trains and measures per model; ``--long`` trains eight times as many samples and scores
    GenEval and understanding on more held-out captions and questions."""

    samples: int = 960  # training samples per model (40 % draw images, 40 % answer, 20 % text)
    geneval_per_category: int = 6
    questions_per_type: int = 60
    cfgs: tuple[float, ...] = (1.0, 3.0)
    conflict_questions: int = 24
    heldout_texts: int = 200
    codebook_size: int = 1024

    @classmethod
    def for_lab(cls, config: LabConfig) -> UnixSettings:
        return cls(samples=7680, geneval_per_category=24, questions_per_type=300) if config.long_run else cls()


def recipe_path() -> Path:
    return Path(str(resources.files("vlmforge.shapes") / "recipes" / RECIPE))


def world_config(config: LabConfig):
    from vlmforge.shapes.world import WorldConfig

    return WorldConfig(seed=config.world_seed, train_size=config.train_images, test_size=config.test_images)


def _palette(world) -> list[tuple[int, int, int]]:
    from vlmforge.shapes.world.config import COLOR_RGB

    return [tuple(world.background), *(tuple(COLOR_RGB[c]) for c in world.colors)]


def prepare(out: Path, world_root: Path, world, settings: UnixSettings) -> dict[str, Path]:
    """The patch tokenizer (trained on the train images once), text-to-image records with the detailed captions
    (the only ones that name positions, which GenEval asks for), and text records: train captions to learn from,
    test captions for the held-out loss."""
    from PIL import Image

    from vlmforge.data.records import iter_jsonl_objects
    from vlmforge.models.image_tokenizer import LOADER_FILE
    from vlmforge.shapes.foundation.patch_tokenizer import PatchTokenizerSpec, train_patch_tokenizer

    root = out / "unix"
    tokenizer = root / f"patch-tokenizer-{settings.codebook_size}"
    if not (tokenizer / LOADER_FILE).is_file():
        images = [Image.open(p).convert("RGB") for p in sorted((world_root / "images" / "train").glob("*.png"))]
        spec = PatchTokenizerSpec(codebook_size=settings.codebook_size)
        train_patch_tokenizer(images, _palette(world), spec).save(tokenizer)
    paths = {"tokenizer": tokenizer, "codes": root / f"codes-{settings.codebook_size}",
             "generation": root / "generation.jsonl", "text": root / "text-train.jsonl",
             "heldout_text": root / "text-test.jsonl"}  # fmt: skip
    for split, generation, text in (
        ("train", paths["generation"], paths["text"]),
        ("test", None, paths["heldout_text"]),
    ):
        captions = [record for _, record in iter_jsonl_objects(world_root / split / "captions.jsonl")]
        if generation is not None:
            _write(
                generation, [{"id": r["id"], "image": r["image"], "caption": r["detailed_caption"]} for r in captions]
            )
        _write(text, [{"id": r["id"], "text": r["detailed_caption"]} for r in captions])
    return paths


def _write(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if not path.is_file() or path.read_text() != text:  # unchanged files keep their identity for stage reuse
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run_unix(
    config: LabConfig, world_root: Path, foundation_root: Path, variables: dict[str, str], blind: dict
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and measure both arms over the lab's seeds: (the per-recipe rows, the Uni-X summary)."""
    from vlmforge.models.image_tokenizer import load_image_tokenizer
    from vlmforge.shapes.lab.recipe_runs import evaluate_on_test, summarize, train_run
    from vlmforge.shapes.lab.unix_measures import random_codes_floor, tokenizer_ceiling
    from vlmforge.shapes.world.geneval import make_items
    from vlmforge.train.conflict_data import first_turns, pick

    settings, world = UnixSettings.for_lab(config), world_config(config)
    paths = prepare(Path(config.out), world_root, world, settings)
    items = make_items(world, per_category=settings.geneval_per_category)
    image_tokenizer = load_image_tokenizer(paths["tokenizer"])
    ceiling, floor = tokenizer_ceiling(image_tokenizer, items, world), random_codes_floor(image_tokenizer, items, world)
    turns = first_turns(world_root / "train" / "instruct.jsonl", world_root)
    questions = pick(turns, settings.conflict_questions, seed=0, what="the lab's conflict questions")
    heldout = [r["text"] for r in _records(paths["heldout_text"])][: settings.heldout_texts]
    variables = {**variables, "image_tokenizer": str(paths["tokenizer"]), "codes": str(paths["codes"]),
                 "text": str(paths["text"])}  # fmt: skip
    overrides = (f"stages.finetune.data.generation_path={paths['generation']}",
                 f"stages.finetune.data.mix.samples={settings.samples}")  # fmt: skip
    runs: dict[str, list] = {arm: [] for arm in ARM_OVERRIDES}
    measured: dict[str, list] = {arm: [] for arm in ARM_OVERRIDES}
    for seed in config.seeds:  # both arms of a seed before the next seed: an interrupted lab leaves pairs
        for arm, arm_overrides in ARM_OVERRIDES.items():
            name = f"unix-{arm}"
            final, seconds = train_run(config, name, recipe_path(), seed, variables, (*overrides, *arm_overrides))
            run = evaluate_on_test(config, f"{name}-seed{seed}", final, world_root, seed, seconds, UNDERSTANDING,
                                   (), limit=settings.questions_per_type)  # fmt: skip
            runs[arm].append(run)
            measured[arm].append(_measure(config, name, seed, final, settings, world, items, questions, heldout))
    rows = {f"unix-{arm}": {"runs": runs[arm], "summary": summarize(runs[arm], blind)} for arm in ARM_OVERRIDES}
    measures = {arm: {"runs": measured[arm], "summary": _summarize_measures(measured[arm])} for arm in ARM_OVERRIDES}
    return rows, {"settings": asdict(settings), "ceiling": ceiling, "random_codes": floor, "arms": measures,
                  "geneval_items": len(items)}  # fmt: skip


def _records(path: Path) -> list[dict]:
    from vlmforge.data.records import iter_jsonl_objects

    return [record for _, record in iter_jsonl_objects(path)]


def _measure(config, name, seed, model_dir, settings, world, items, questions, heldout) -> dict[str, Any]:
    """Conflict before and after training, held-out text loss and GenEval of one trained model (reused when its
    weights and the settings are unchanged)."""
    from vlmforge.shapes.lab.freshness import run_fresh, weights_digest

    folder = Path(config.out) / "unix" / "measures" / f"{name}-seed{seed}"
    inputs = {"weights": weights_digest(model_dir), "settings": asdict(settings), "seed": seed}
    return run_fresh(Path(config.out), folder, inputs, lambda: _measured(folder, model_dir, settings, world, items,
                                                                         questions, heldout, seed))  # fmt: skip


def _measured(folder, model_dir, settings, world, items, questions, heldout, seed) -> dict[str, Any]:
    from transformers import set_seed

    from vlmforge.models.architectures import get_architecture
    from vlmforge.models.unified.chat_processor import UnifiedChatProcessor, load_for_chat
    from vlmforge.shapes.lab.unix_measures import conflict_summary, geneval_scores, text_loss
    from vlmforge.train.recipe import load_recipe

    result_file = folder / "measures.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    recipe = load_recipe(Path(model_dir).parents[1] / "recipe.yaml")
    set_seed(seed)  # the stage's own initialisation: its seed, then assembly
    initial, processor = get_architecture("unified").assemble(recipe.model)
    reader = UnifiedChatProcessor(processor.tokenizer, processor.image_tokenizer(), initial.config)
    result = {"seed": seed, "conflict_init": conflict_summary(initial, reader, questions, seed)}
    model, trained = load_for_chat(model_dir)
    result["parameters"] = model.parameter_counts()
    result["conflict_trained"] = conflict_summary(model, trained, questions, seed)
    result["text_loss"] = text_loss(model, trained.tokenizer, heldout)
    result["text_loss_init"] = text_loss(initial, processor.tokenizer, heldout)
    result["geneval"] = geneval_scores(model_dir, items, world, settings.cfgs, seed, folder / "images")
    result_file.write_text(json.dumps(result, indent=2))
    return result


def _mean_se(values: list[float]) -> dict[str, float | None]:
    mean, se = mean_and_se(values)
    return {"mean": mean, "se": se, "per_seed": values}


def _summarize_measures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary = {
        "conflict_init": _mean_se([r["conflict_init"]["mean"] for r in runs]),
        "conflict_trained": _mean_se([r["conflict_trained"]["mean"] for r in runs]),
        "text_loss_init": _mean_se([r["text_loss_init"] for r in runs]),
        "text_loss": _mean_se([r["text_loss"] for r in runs]),
    }
    for cfg in runs[0]["geneval"]:
        summary[f"geneval_cfg{cfg}"] = _mean_se([r["geneval"][cfg]["overall"] for r in runs])
    return summary
