"""Attention masks of the unified model: causal, padding, packed samples, and (in split layers) one modality.

Built here rather than with transformers' mask builders because a split layer must also answer for the tokens
of the *other* modality (it runs on every position on the inference path and their outputs are dropped): such a
query has no key it may see. Some attention kernels return NaN for a fully masked row, and a NaN in a dropped
output still poisons the gradients, so every row that would be empty attends to its own position instead, which
changes no kept output.
"""

from __future__ import annotations

import torch

# The attention implementations whose mask is a dense [batch, 1, query, key] tensor.
SUPPORTED_ATTENTION = ("sdpa", "eager")


def vision_tokens(input_ids: torch.Tensor, text_vocab_size: int, vision_start_token_id: int) -> torch.Tensor:
    """True where a token is read by the vision layers: an image code, or ``<|vision_start|>`` (Uni-X's rule)."""
    return (input_ids >= text_vocab_size) | (input_ids == vision_start_token_id)


def allowed_keys(
    batch: int,
    q_len: int,
    kv_len: int,
    device: torch.device,
    key_valid: torch.Tensor | None = None,
    samples: torch.Tensor | None = None,
    query_keep: torch.Tensor | None = None,
    key_keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which keys each query may attend to: ``[batch, 1, q_len, kv_len]`` booleans.

    The queries are the last ``q_len`` of the ``kv_len`` positions (a KV cache holds the others). ``key_valid``
    ``[batch, kv_len]``: False for padding. ``samples`` ``[batch, kv_len]``: packed sample ids; keys of another
    sample are hidden. ``query_keep`` ``[batch, q_len]`` and ``key_keep`` ``[batch, kv_len]``: a modality; a kept
    query sees only kept keys. Rows left empty attend to their own position.
    """
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)
    k_pos = torch.arange(kv_len, device=device)
    allowed = (k_pos[None, :] <= q_pos[:, None]).expand(batch, q_len, kv_len)
    if key_valid is not None:
        allowed = allowed & key_valid[:, None, :].bool()
    if samples is not None:
        allowed = allowed & (samples[:, -q_len:, None] == samples[:, None, :])
    if query_keep is not None:
        allowed = allowed & query_keep[:, :, None] & key_keep[:, None, :]
    own = (k_pos[None, :] == q_pos[:, None])[None]
    allowed = allowed | (own & ~allowed.any(dim=-1, keepdim=True))
    return allowed[:, None]


def for_attention(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """The mask in the form the attention implementation reads: booleans for SDPA, an additive bias for eager."""
    if implementation == "sdpa":
        return allowed
    if implementation == "eager":
        zero = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    raise ValueError(
        f"the unified model runs with attn_implementation in {SUPPORTED_ATTENTION}, not {implementation!r}: its "
        "split layers need a dense per-modality mask"
    )
