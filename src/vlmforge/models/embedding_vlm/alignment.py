"""Covariance alignment at test time: an extension of Unicorn's test-time centring (off unless asked for).

Mean shift matches the *first* moment of the two sides: caption vectors are centred with the caption mean, image
vectors with the image mean. Their spread can still differ. In the shapes lab it does, along the direction that
holds the number of objects: a linear count read-out fitted on the mean-shifted caption vectors overestimates
small counts and underestimates large ones on the mean-shifted image vectors of the same scenes, and the
text-only model miscounts in the same way (docs/unicorn.md). Matching the second moment
as well (CORAL: Sun, Feng and Saenko, "Return of Frustratingly Easy Domain Adaptation", AAAI 2016) whitens the
centred image vectors with their own covariance and re-colours them with the covariance of the vectors the
model was trained on. It needs only what centring needs (unlabelled calibration images) plus the training store,
and no retraining.

Written here because none of our libraries does it: two shrunk covariances and two symmetric matrix roots.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Shrinkage toward a scaled identity: a calibration set smaller than the embedding width has a singular
# covariance; the lab's accuracies hardly depend on the exact value (docs/unicorn.md).
DEFAULT_SHRINKAGE = 0.3


def shrunk_covariance(x, shrinkage: float = DEFAULT_SHRINKAGE, chunk: int = 65536) -> torch.Tensor:
    """Covariance of the rows of ``x`` (a tensor, or an array such as a memory-mapped store read ``chunk`` rows at a
    time, as ``transfer.compute_stats`` reads it), about their mean, pulled toward mean-variance x identity by
    ``shrinkage`` (float64)."""
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    n, d = int(x.shape[0]), int(x.shape[1])
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 rows, got {n}")
    total, outer = torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
    for start in range(0, n, chunk):
        rows = torch.as_tensor(np.array(x[start : start + chunk])).double()
        total += rows.sum(0)
        outer += rows.T @ rows
    mean = total / n
    cov = (outer - n * torch.outer(mean, mean)) / (n - 1)
    target = cov.diagonal().mean() * torch.eye(d, dtype=cov.dtype)
    return (1 - shrinkage) * cov + shrinkage * target


def _symmetric_power(matrix: torch.Tensor, power: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp_min(1e-12) ** power) @ vectors.T


def covariance_alignment(image_covariance: torch.Tensor, text_covariance: torch.Tensor) -> torch.Tensor:
    """The [D, D] matrix A = C_image^(-1/2) C_text^(1/2) (float32).

    ``image_covariance``: of the calibration images' L2-normalised embeddings; ``text_covariance``: of the vectors
    the model was trained on (the transferred store), both from ``shrunk_covariance``. Image rows centred with their
    own mean and multiplied by A have the text rows' covariance; the model then normalises them, as every input."""
    if image_covariance.shape != text_covariance.shape:
        raise ValueError(f"image covariance {tuple(image_covariance.shape)} != text {tuple(text_covariance.shape)}")
    return (_symmetric_power(image_covariance, -0.5) @ _symmetric_power(text_covariance, 0.5)).float()


def align(vectors: torch.Tensor, mean: torch.Tensor, matrix: torch.Tensor | None = None) -> torch.Tensor:
    """Norm((Norm(x) - mean) A): the image side at inference; without ``matrix``, the paper's centring."""
    centred = F.normalize(vectors.float(), dim=-1) - mean.float()
    return F.normalize(centred if matrix is None else centred @ matrix.float(), dim=-1)
