"""Modality representation transfer (Unicorn stage 3b): move caption embeddings toward where image embeddings
live, so a VLM trained on text embeddings works on image embeddings. It lives beside the embedding-input VLM
because the model applies the same shift to image embeddings at inference.

Methods (all start from L2-normalised u):
  none        u
  mean_shift  Norm(u - mu)            (paper; ``renorm=False`` gives the released code's u - mu)
  c3          Norm(u - mu + N(0, sigma^2 I)), sigma ~ 0.126 (the C3 ablation)
mu is the mean of the normalised embeddings of the side being transferred: caption embeddings at training time,
image embeddings (a calibration set or the test set) at inference. The ideal shift would add the image mean,
which text-only training cannot know, so both sides are centred instead. Noise is a training-time augmentation:
at inference use ``mean_shift`` with image statistics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

METHODS = ("none", "mean_shift", "c3")
C3_SIGMA = 0.126  # paper: variance 0.016
STATS_TENSORS, STATS_JSON = "stats.safetensors", "stats.json"


@dataclass
class TransferStats:
    mean: torch.Tensor  # [D] mean of the L2-normalised embeddings
    std: torch.Tensor  # [D] per-dimension standard deviation, for inspection
    n: int

    def save(self, directory: Path, **extra: object) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {"mean": self.mean.float().contiguous(), "std": self.std.float().contiguous()},
            str(directory / STATS_TENSORS),
        )
        info = {"n": self.n, "dim": int(self.mean.numel()), "mean_norm": float(self.mean.norm()), **extra}
        (directory / STATS_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> TransferStats:
        from safetensors.torch import load_file

        directory = Path(directory)
        tensors = load_file(str(directory / STATS_TENSORS))
        info = json.loads((directory / STATS_JSON).read_text(encoding="utf-8"))
        return cls(mean=tensors["mean"], std=tensors["std"], n=int(info["n"]))


def compute_stats(x: torch.Tensor | np.ndarray, chunk: int = 65536) -> TransferStats:
    """Mean and std of the normalised rows, accumulated in float64 chunks (works on a memory-mapped array)."""
    n, d = int(x.shape[0]), int(x.shape[1])
    if n == 0:
        raise ValueError("cannot compute transfer statistics of zero embeddings")
    total, total_sq = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    for start in range(0, n, chunk):
        u = F.normalize(torch.as_tensor(np.array(x[start : start + chunk])).double(), dim=-1)
        total += u.sum(0)
        total_sq += (u * u).sum(0)
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
    return TransferStats(mean=mean.float(), std=std.float(), n=n)


def transfer(
    x: torch.Tensor,
    stats: TransferStats | None,
    method: str,
    *,
    renorm: bool = True,
    sigma: float = C3_SIGMA,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply a transfer to rows of ``x`` (float32 result). Reusable at inference: image embeddings with image
    statistics and ``method="mean_shift"``."""
    if method not in METHODS:
        raise ValueError(f"unknown transfer method {method!r}; choose from {METHODS}")
    u = F.normalize(x.float(), dim=-1)
    if method == "none":
        return u
    if stats is None:
        raise ValueError(f"method {method!r} needs statistics (compute_stats)")
    v = u - stats.mean.to(u.device, u.dtype)
    if method == "c3":
        v = v + sigma * torch.randn(v.shape, generator=generator, dtype=v.dtype).to(v.device)
    return F.normalize(v, dim=-1) if renorm else v
