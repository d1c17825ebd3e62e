"""How a new unified model's image-code embeddings start.

``mean`` (Uni-X's choice, the default): every code row starts at the mean of the text rows, so all codes look
alike until training tells them apart. ``codebook``: every code row starts at that mean plus the image
tokenizer's own code vector, mapped into the LM's embedding space by an isometry (after PCA when the code vectors
have more dimensions than the LM), scaled to the spread of the text rows. Codes the tokenizer finds similar then
start similar and different ones different, so the model can read an image before it has learnt each code.
"""

from __future__ import annotations

import torch

from vlmforge.errors import ConfigError

CODE_INITS = ("mean", "codebook")


def codebook_rows(text_rows: torch.Tensor, vectors: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Rows ``[codes, hidden]`` for the codebook ``vectors [codes, dim]``, placed around the mean of ``text_rows
    [text_vocab, hidden]`` with the text rows' mean distance from it."""
    text_rows, vectors = text_rows.detach().float(), vectors.detach().float()
    hidden = text_rows.shape[1]
    centred = vectors - vectors.mean(0)
    if centred.shape[1] > hidden:  # keep the directions the codebook varies most in
        _, _, right = torch.linalg.svd(centred, full_matrices=False)
        centred = centred @ right[:hidden].T
    # A seeded random isometry rather than the first coordinates: an LM's embedding axes are not interchangeable
    # (per-axis norm gains, outlier dimensions), a random rotation spreads the codes over all of them.
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(hidden, centred.shape[1], generator=generator))
    placed = centred @ rotation.T
    mean = text_rows.mean(0)
    spread = (text_rows - mean).norm(dim=1).mean()
    scale = spread / placed.norm(dim=1).mean().clamp_min(1e-12)
    return mean + placed * scale


def code_vectors(image_tokenizer) -> torch.Tensor:
    """The image tokenizer's code vectors ``[codebook_size, dim]`` (its ``code_vectors()``), or a clear error."""
    if not callable(getattr(image_tokenizer, "code_vectors", None)):
        raise ConfigError(
            f"code_init 'codebook' needs the image tokenizer's code vectors, and {type(image_tokenizer).__name__} "
            "has no code_vectors(); use code_init 'mean'"
        )
    vectors = image_tokenizer.code_vectors()
    if vectors.dim() != 2 or vectors.shape[0] != image_tokenizer.codebook_size:
        raise ConfigError(
            f"code_vectors() gave shape {list(vectors.shape)}, expected [{image_tokenizer.codebook_size}, dim]"
        )
    return vectors
