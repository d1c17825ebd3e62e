"""Build a unified model from any Qwen2-family causal LM and its tokenizer.

The tokenizer gains the special tokens it lacks (Qwen2.5's already has ``<|vision_start|>`` and
``<|vision_end|>``); the LM's embeddings and head grow by those and by the codebook through transformers'
``resize_token_embeddings(mean_resizing=True)``, so every new row starts at the old rows' mean (Uni-X does the
same). Image codes take the ids after every text id, so no text token ever reads as an image code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from vlmforge.errors import ConfigError
from vlmforge.models.unified.code_embeddings import CODE_INITS, codebook_rows
from vlmforge.models.unified.configuration import (
    ARMS,
    SPECIAL_TOKENS,
    UNCONDITIONAL,
    VISION_END,
    VISION_START,
    UnifiedConfig,
)
from vlmforge.models.unified.modeling import UnifiedForCausalLM


@dataclass
class UnifiedSpec:
    """What to build: the arm, its split layers, and the image tokenizer's codebook and code grid."""

    arm: str = "two_end"
    encode_layers: int = 0  # E: the first E layers get a vision copy
    decode_layers: int = 0  # D: the last D layers get a vision copy
    codebook_size: int = 8192
    image_grid: tuple[int, int] = (32, 32)
    init_vision_with_text: bool = True
    code_init: str = "mean"  # see models/unified/code_embeddings.py: "mean" (Uni-X) or "codebook"

    def validate(self, num_layers: int) -> None:
        if self.arm not in ARMS:
            raise ConfigError(f"unknown unified arm '{self.arm}'; choose one of {', '.join(ARMS)}")
        if self.arm != "two_end" and (self.encode_layers or self.decode_layers):
            raise ConfigError(f"the {self.arm} arm takes no encode_layers or decode_layers (they belong to two_end)")
        if self.encode_layers < 0 or self.decode_layers < 0 or self.encode_layers + self.decode_layers > num_layers:
            raise ConfigError(
                f"encode_layers {self.encode_layers} + decode_layers {self.decode_layers} must be >= 0 and fit the "
                f"LM's {num_layers} layers"
            )
        if self.codebook_size < 1:
            raise ConfigError(f"codebook_size must be >= 1, got {self.codebook_size}")
        if self.code_init not in CODE_INITS:
            raise ConfigError(f"unknown code_init '{self.code_init}'; choose one of {', '.join(CODE_INITS)}")


def add_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add whichever of ``<|vision_start|>``, ``<|vision_end|>``, ``<unconditional>`` the tokenizer lacks."""
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_unified(
    lm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    spec: UnifiedSpec,
    code_vectors: torch.Tensor | None = None,
) -> tuple[UnifiedForCausalLM, PreTrainedTokenizerBase]:
    """A unified model holding ``lm``'s weights (``lm`` is resized in place). Returns the model and the tokenizer
    with its special tokens added. ``code_vectors`` (the image tokenizer's, ``[codebook_size, dim]``) are needed
    when ``spec.code_init`` is ``codebook``."""
    spec.validate(lm.config.num_hidden_layers)
    if spec.code_init == "codebook" and code_vectors is None:
        raise ConfigError("code_init 'codebook' needs the image tokenizer's code vectors")
    tokenizer = add_special_tokens(tokenizer)
    lm_vocab = lm.get_input_embeddings().num_embeddings
    text_vocab = max(len(tokenizer), lm_vocab)
    lm.resize_token_embeddings(text_vocab + spec.codebook_size, mean_resizing=True)
    if spec.code_init == "codebook":
        _place_codes(lm, lm_vocab, text_vocab, code_vectors)
    text_config = lm.config.to_dict()
    text_config["vocab_size"] = text_vocab + spec.codebook_size
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = UnifiedConfig(
        text_config=text_config,
        arm=spec.arm,
        num_vision_encode_layers=spec.encode_layers,
        num_vision_decode_layers=spec.decode_layers,
        text_vocab_size=text_vocab,
        codebook_size=spec.codebook_size,
        image_grid=tuple(spec.image_grid),
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        unconditional_token_id=ids[UNCONDITIONAL],
        init_vision_with_text=spec.init_vision_with_text,
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = UnifiedForCausalLM(config)
    model.model.load_state_dict(lm.base_model.state_dict())
    model.lm_head.load_state_dict(lm.get_output_embeddings().state_dict())
    if spec.init_vision_with_text:
        model.copy_text_into_vision_layers()
    return model.to(lm.dtype), tokenizer


@torch.no_grad()
def _place_codes(lm: PreTrainedModel, lm_vocab: int, text_vocab: int, vectors: torch.Tensor) -> None:
    """Code rows of the input embeddings (and of an untied head) from the codebook, around the LM's own rows."""
    matrices = {id(m.weight): m.weight for m in (lm.get_input_embeddings(), lm.get_output_embeddings()) if m}
    for weight in matrices.values():
        weight[text_vocab:] = codebook_rows(weight[:lm_vocab], vectors).to(weight.dtype)


def unified_from_pretrained_lm(
    language_model: str, spec: UnifiedSpec, dtype: str = "float32", code_vectors: torch.Tensor | None = None
) -> tuple[UnifiedForCausalLM, PreTrainedTokenizerBase]:
    """``build_unified`` from an LM folder or hub id (any ``AutoModelForCausalLM`` of the Qwen2 family)."""
    from vlmforge.models.assemble import resolve_model_path

    path = resolve_model_path(language_model, "language model")
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return build_unified(lm, AutoTokenizer.from_pretrained(path), spec, code_vectors)
