"""Covariance alignment (vlmforge.models.embedding_vlm.alignment): the math. The model and CLI side is in
test_embedding_vlm.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlmforge.models.embedding_vlm.alignment import align, covariance_alignment, shrunk_covariance


def _rows(n: int, d: int, seed: int, scale: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=generator) * scale
    return torch.randn(n, d, generator=generator) @ mixing + torch.randn(d, generator=generator)


def test_covariance_reads_rows_in_chunks_and_shrinks_toward_a_scaled_identity():
    x = _rows(300, 6, 0, torch.ones(6))
    exact = torch.cov(x.double().T)
    assert torch.allclose(shrunk_covariance(x, 0.0, chunk=7), exact, atol=1e-10)
    half = shrunk_covariance(x, 0.5)
    assert torch.allclose(half, 0.5 * exact + 0.5 * exact.diagonal().mean() * torch.eye(6, dtype=exact.dtype))
    assert torch.allclose(shrunk_covariance(x, 1.0), exact.diagonal().mean() * torch.eye(6, dtype=exact.dtype))


def test_aligned_image_rows_take_the_text_rows_covariance():
    images = _rows(500, 5, 1, torch.tensor([3.0, 0.2, 1.0, 0.5, 2.0]))  # another spread, another mean
    texts = _rows(800, 5, 2, torch.ones(5))
    matrix = covariance_alignment(shrunk_covariance(images, 0.0), shrunk_covariance(texts, 0.0))
    moved = (images - images.mean(0)) @ matrix
    assert torch.allclose(torch.cov(moved.double().T), torch.cov(texts.double().T), atol=1e-4)
    # Before the alignment the covariances differ by far more than that.
    assert not torch.allclose(torch.cov(images.double().T), torch.cov(texts.double().T), atol=0.5)


def test_align_centres_multiplies_and_normalises():
    x, mean, matrix = torch.randn(4, 3), torch.randn(3) * 0.1, torch.randn(3, 3)
    expected = F.normalize((F.normalize(x, dim=-1) - mean) @ matrix, dim=-1)
    assert torch.allclose(align(x, mean, matrix), expected, atol=1e-6)
    assert torch.allclose(align(x, mean), F.normalize(F.normalize(x, dim=-1) - mean, dim=-1), atol=1e-6)


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="shrinkage"):
        shrunk_covariance(torch.randn(5, 2), 1.5)
    with pytest.raises(ValueError, match="at least 2 rows"):
        shrunk_covariance(torch.randn(1, 2))
    with pytest.raises(ValueError, match="image covariance"):
        covariance_alignment(torch.eye(3), torch.eye(4))
