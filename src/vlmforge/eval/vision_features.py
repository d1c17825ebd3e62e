"""Pooled features of a frozen vision tower, taken where a LLaVA built on it takes them, cached on disk.

A LLaVA feeds its projector the vision tower's hidden states at ``vision_feature_layer`` (the second-to-last
layer by default; a list of layers is concatenated per token), without CLS for the ``default`` select strategy
(CLIP) and with every token for ``full`` (SigLIP). The readout ceiling probes exactly those tokens, averaged over
the image. Features are cached as safetensors next to a JSON list of the images they belong to, keyed by the
tower's identity and the layer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from vlmforge.data.images import load_image
from vlmforge.models.assemble import (
    FeatureLayer,
    check_feature_layers,
    default_select_strategy,
    feature_layers,
    vision_config_of,
)
from vlmforge.provenance import path_identity

BATCH = 64
GRID = 3  # cells per side of the pooling grid (fewer when the tower has fewer patches per side)


def load_tower(vision_model: str):
    """(vision tower, image processor) from a vision model folder or a full CLIP/SigLIP checkpoint."""
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(vision_model)
    return getattr(model, "vision_model", model).eval(), AutoImageProcessor.from_pretrained(vision_model)


def grid_pool(tokens: torch.Tensor) -> torch.Tensor:
    """[B, T, D] patch tokens -> [B, cells * D]: the mean per cell of a square grid of at most GRID x GRID cells
    (a plain mean when the tokens do not form a square)."""
    side = int(round(tokens.shape[1] ** 0.5))
    if side * side != tokens.shape[1]:
        return tokens.mean(dim=1)
    square = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
    return torch.nn.functional.adaptive_avg_pool2d(square, min(side, GRID)).flatten(1)


def selected_tokens(hidden_states: Sequence[torch.Tensor], layer: FeatureLayer, strategy: str) -> torch.Tensor:
    """[B, T, D x layers] the tokens a LLaVA's projector receives, selected as transformers' LLaVA selects them."""
    chosen = [hidden_states[index] for index in feature_layers(layer)]
    return torch.cat([h[:, 1:] if strategy == "default" else h for h in chosen], dim=-1)


def pooled_features(tower, processor, images: Sequence[Path], layer: FeatureLayer, strategy: str) -> torch.Tensor:
    """[N, cells x hidden] grid-pooled patch tokens of the layer(s) per image, as the projector would receive
    them."""
    rows = []
    batches = range(0, len(images), BATCH)
    for start in tqdm(batches, desc="[probe] vision features", unit="batch", dynamic_ncols=True):
        chunk = [load_image(p, str(p)) for p in images[start : start + BATCH]]
        pixels = processor(images=chunk, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            hidden_states = tower(pixel_values=pixels, output_hidden_states=True).hidden_states
        rows.append(grid_pool(selected_tokens(hidden_states, layer, strategy)))
    return torch.cat(rows) if rows else torch.empty(0)


def cached_features(
    vision_model: str, images: Sequence[Path], layer: FeatureLayer, strategy: str | None, cache: Path | None
) -> tuple[torch.Tensor, dict]:
    """Features of ``images`` (rows in that order) and a description (tower, layer, strategy); read from
    ``cache`` when it holds them for the same tower and layer, else computed and written there."""
    # The config alone names the strategy and the layers; the tower's weights load only when the cache cannot answer.
    vision_config = vision_config_of(vision_model)
    check_feature_layers(layer, vision_config)
    strategy = strategy or default_select_strategy(vision_config)
    about = {
        "vision_model": str(vision_model),
        "layer": layer if isinstance(layer, int) else list(layer),
        "strategy": strategy,
        "pooling": f"mean per cell of a grid of at most {GRID}x{GRID}",
    }
    key = hashlib.sha256(
        json.dumps([path_identity(vision_model), about["layer"], strategy, GRID]).encode()
    ).hexdigest()[:16]
    names = [str(p) for p in images]
    if cache is not None:
        tensors, listing = cache / f"features-{key}.safetensors", cache / f"features-{key}.json"
        if tensors.is_file() and listing.is_file():
            known = {name: i for i, name in enumerate(json.loads(listing.read_text()))}
            if all(name in known for name in names):
                stored = load_file(tensors)["features"]
                return stored[[known[n] for n in names]], {**about, "cached": True}
    unique = list(dict.fromkeys(names))
    features = pooled_features(*load_tower(vision_model), [Path(n) for n in unique], layer, strategy)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        save_file({"features": features.contiguous()}, str(tensors))
        listing.write_text(json.dumps(unique))
    index = {name: i for i, name in enumerate(unique)}
    return features[[index[n] for n in names]], {**about, "cached": False}
