"""Transfer a whole caption-embedding store into the image-embedding space (Unicorn stage 3b, the job).

The shift itself (``none`` / ``mean_shift`` / ``c3``) is :mod:`vlmforge.models.embedding_vlm.transfer`, beside the
model that applies it to image embeddings at inference; this module runs it over a store on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vlmforge.models.embedding_vlm.transfer import C3_SIGMA, compute_stats, transfer


def transfer_store(
    src_dir: Path,
    out_dir: Path,
    method: str,
    *,
    renorm: bool = True,
    sigma: float = C3_SIGMA,
    seed: int = 0,
    chunk: int = 65536,
) -> dict[str, object]:
    """Transfer a whole ``EmbeddingStore`` into a new one; statistics saved next to it. Returns a summary."""
    from vlmforge.data.embedding_store import EmbeddingStore

    store = EmbeddingStore.open(src_dir)
    stats = compute_stats(store.array, chunk=chunk)
    out = np.empty(store.array.shape, dtype=np.float16)
    gen = torch.Generator().manual_seed(seed)  # chunks drawn in order: same seed, same noise
    for start in range(0, len(store), chunk):
        rows = torch.from_numpy(np.array(store.array[start : start + chunk]))
        out[start : start + chunk] = (
            transfer(rows, stats, method, renorm=renorm, sigma=sigma, generator=gen).half().numpy()
        )
    EmbeddingStore.write(out_dir, store.ids, out)
    config = {"method": method, "renorm": renorm, "sigma": sigma if method == "c3" else None, "seed": seed}
    stats.save(out_dir, source=str(src_dir), **config)
    return {"n": len(store), "dim": store.dim, "mean_norm": float(stats.mean.norm()), **config}
