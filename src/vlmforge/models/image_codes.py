"""Encoding a set of images into codes: batched, resumable, stored as safetensors shards.

Layout of an output folder::

    tokenizer.json            the image tokenizer's codebook size, grid and name (written first)
    codes-00000.safetensors   tensor "codes" [n, rows * columns] int32; the metadata "ids" is the JSON id list
    ...
    manifest.json             written when every image is encoded

Each shard is written under a temporary name and renamed, so an interrupted run leaves whole shards only; a
rerun encodes just the ids no shard holds yet. A folder made with another tokenizer is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from vlmforge.errors import StaleOutputError
from vlmforge.manifest import write_manifest
from vlmforge.models.image_tokenizer import ImageTokenizer, check_codes

TOKENIZER_FILE, SHARD_GLOB = "tokenizer.json", "codes-*.safetensors"


def _shards(out: Path) -> list[Path]:
    return sorted(out.glob(SHARD_GLOB))


def read_codes(out: str | Path) -> tuple[list[str], torch.Tensor]:
    """Every encoded id and its codes ``[n, rows * columns]`` (int64), in the order they were encoded."""
    ids, parts = [], []
    for shard in _shards(Path(out)):
        with safe_open(str(shard), framework="pt") as f:
            ids.extend(json.loads(f.metadata()["ids"]))
            parts.append(f.get_tensor("codes").long())
    return ids, torch.cat(parts) if parts else torch.empty(0, 0, dtype=torch.long)


def _claim(out: Path, tokenizer: ImageTokenizer, name: str) -> None:
    identity = {"codebook_size": tokenizer.codebook_size, "grid": list(tokenizer.grid), "name": name}
    path = out / TOKENIZER_FILE
    if path.exists():
        before = json.loads(path.read_text())
        if before != identity:
            changed = [f"{k}: {before.get(k)} -> {v}" for k, v in identity.items() if before.get(k) != v]
            raise StaleOutputError(f"{out} holds codes of another image tokenizer; use a new folder", changed)
    else:
        path.write_text(json.dumps(identity, indent=2) + "\n")


def _write_shard(out: Path, index: int, ids: list[str], codes: torch.Tensor) -> None:
    final = out / f"codes-{index:05d}.safetensors"
    temporary = final.with_suffix(".tmp")
    save_file({"codes": codes.to(torch.int32).contiguous()}, str(temporary), metadata={"ids": json.dumps(ids)})
    temporary.replace(final)


def encode_dataset(
    tokenizer: ImageTokenizer,
    items: Sequence[tuple[str, str | Path]],
    out: str | Path,
    batch_size: int = 64,
    shard_size: int = 4096,
    name: str = "",
    load: Callable[[str | Path], Image.Image] | None = None,
) -> Path:
    """Encode ``items`` (id, image path) into ``out``, skipping ids already there. ``name`` identifies the
    tokenizer (e.g. its folder) so a folder is never extended with another tokenizer's codes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _claim(out, tokenizer, name)
    load = load or (lambda path: Image.open(path).convert("RGB"))
    if len({i for i, _ in items}) != len(items):
        raise ValueError("image ids must be unique")
    done = set(read_codes(out)[0])
    todo = [(i, p) for i, p in items if i not in done]
    start, index = time.time(), len(_shards(out))
    pending_ids: list[str] = []
    pending: list[torch.Tensor] = []
    for first in range(0, len(todo), batch_size):
        batch = todo[first : first + batch_size]
        pending.append(check_codes(tokenizer.encode([load(p) for _, p in batch]), tokenizer))
        pending_ids.extend(i for i, _ in batch)
        if len(pending_ids) >= shard_size or first + batch_size >= len(todo):
            _write_shard(out, index, pending_ids, torch.cat(pending))
            index, pending_ids, pending = index + 1, [], []
    write_manifest(
        out, images=len(items), encoded_now=len(todo), shards=index, seconds=round(time.time() - start, 2), name=name
    )
    return out
