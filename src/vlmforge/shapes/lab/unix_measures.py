"""What the Uni-X lab measures on one unified model: modality conflict in the shared layers, held-out text loss,
and the exact GenEval of drawn images at several CFG scales (with its tokenizer round-trip ceiling).

Conflict compares the same question-answer pairs with and without their image, so both sides train exactly the
same answer tokens and differ only by the image."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vlmforge.data.collate import PaddingCollator
from vlmforge.models.unified.prompts import text_sample
from vlmforge.train.conflict import WEIGHT_TYPES, gradient_conflict
from vlmforge.train.conflict_data import Turn, conflict_batches

CONFLICT_LAYERS = (1, 2)  # the foundation LM's middle layers: shared in both arms (two_end splits layers 0 and 3)
CONFLICT_BATCH = 4


def conflict_summary(model, processor, turns: Sequence[Turn], seed: int) -> dict:
    """``gradient_conflict`` on the shared middle layers over the same question-answer turns with and without
    their images (``train.conflict_data``, as ``vlmforge unified conflict`` builds them), and its mean per weight
    type and overall. ``processor``: the model's ``UnifiedChatProcessor``."""
    text = conflict_batches(turns, processor, CONFLICT_BATCH, with_images=False)
    multimodal = conflict_batches(turns, processor, CONFLICT_BATCH, with_images=True)
    result = gradient_conflict(model, text, multimodal, layers=CONFLICT_LAYERS, seed=seed)
    per_type = {kind: sum(values) / len(values) for kind, values in result["conflict"].items()}
    return {**result, "mean_per_type": per_type, "mean": sum(per_type.values()) / len(WEIGHT_TYPES)}


@torch.no_grad()
def text_loss(model, tokenizer, texts: Sequence[str], batch_size: int = 32) -> float:
    """Mean loss per trained token of ``texts`` as text-only samples."""
    pad = PaddingCollator(tokenizer.pad_token_id)
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(texts), batch_size):
        samples = [dict(zip(("input_ids", "labels"), text_sample(tokenizer, t), strict=True))
                   for t in texts[start : start + batch_size]]  # fmt: skip
        batch = pad(samples)
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(model(**batch, use_cache=False).loss) * n
        tokens += n
    return total / max(tokens, 1)


def geneval_scores(model_dir: Path, items, world_config, cfgs: Sequence[float], seed: int, out: Path) -> dict:
    """The exact GenEval of images the model draws for the items' prompts at each CFG scale, through the runtime
    the server uses (cond + uncond in one batch); the images are kept in ``out/cfg-X/``."""
    from vlmforge.models.unified.generation import ImageSampling
    from vlmforge.runtime import VisionLanguageModel
    from vlmforge.shapes.world.geneval import score_images

    runtime = VisionLanguageModel.from_pretrained(model_dir, device="cpu")
    prompts = [item.prompt for item in items]
    scores = {}
    for cfg in cfgs:
        images = runtime.generate_images(prompts, ImageSampling(cfg=cfg, temperature=1.0, seed=seed))
        folder = out / f"cfg-{cfg:g}"
        folder.mkdir(parents=True, exist_ok=True)
        for item, image in zip(items, images, strict=True):
            image.save(folder / f"{item.id}.png")
        result = score_images(items, images, world_config)
        (folder / "geneval.json").write_text(json.dumps(result, indent=2))
        scores[f"{cfg:g}"] = {"overall": result["overall"], "categories": result["categories"]}
    return scores


def tokenizer_ceiling(image_tokenizer, items, world_config) -> dict[str, Any]:
    """GenEval of the items' target scenes after an encode -> decode round trip: what a perfect drawer scores."""
    from vlmforge.shapes.world.geneval import score_images
    from vlmforge.shapes.world.render import render_scene

    renders = [render_scene(item.scene, world_config).image for item in items]
    result = score_images(items, image_tokenizer.decode(image_tokenizer.encode(renders)), world_config)
    return {"overall": result["overall"], "categories": result["categories"]}


def random_codes_floor(image_tokenizer, items, world_config, seed: int = 0) -> dict[str, Any]:
    """GenEval of images decoded from uniformly random codes: what drawing nothing in particular already scores
    (a random grid reads back as some objects, which can meet a loose requirement by luck)."""
    from vlmforge.shapes.world.geneval import score_images

    generator = torch.Generator().manual_seed(seed)
    rows, cols = image_tokenizer.grid
    codes = torch.randint(0, image_tokenizer.codebook_size, (len(items), rows * cols), generator=generator)
    result = score_images(items, image_tokenizer.decode(codes), world_config)
    return {"overall": result["overall"], "categories": result["categories"]}
