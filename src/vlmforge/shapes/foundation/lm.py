"""A tiny causal LM pretrained on the world's text: the stand-in for Qwen/Phi.

A standard ``Qwen2ForCausalLM`` (nothing custom), so ``AutoModelForCausalLM.from_pretrained`` loads it and LLaVA
assembly treats it like any hub LM. Pretraining is classic next-token prediction over text packed into fixed
blocks, separated by ``<|endoftext|>``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from vlmforge.errors import ConfigError
from vlmforge.shapes.foundation.loop import TrainLog, run_steps


@dataclass
class LMSpec:
    """Size and training budget of the tiny LM."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    block_size: int = 128
    batch_size: int = 16
    # Enough text steps for the LM to answer every question type with the right kind of answer (colour, shape,
    # digit, Yes/No, letter, box) rather than one answer to everything.
    steps: int = 300
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.1


def lm_config(spec: LMSpec, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    if spec.hidden_size % spec.num_heads or spec.num_heads % spec.num_kv_heads:
        raise ConfigError(
            f"LM hidden_size {spec.hidden_size} must divide by num_heads {spec.num_heads}, "
            f"which must divide by num_kv_heads {spec.num_kv_heads}"
        )
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        # Tied input/output embeddings: fewer parameters, and the usual choice for small LMs (Qwen2-0.5B too).
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )


def pack_texts(
    tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], block_size: int, seed: int = 0
) -> torch.Tensor:
    """Shuffle the texts, join them with ``<|endoftext|>`` and cut the stream into ``block_size`` blocks.

    Packing wastes no compute on padding; attention crossing a separator is the standard pretraining trade-off
    (the separator tells the model a new document starts). The incomplete last block is dropped.
    """
    order = list(texts)
    random.Random(seed).shuffle(order)
    sep = tokenizer.pad_token_id
    stream: list[int] = []
    for ids in tokenizer(order, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(sep)
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise ConfigError(f"LM corpus has {len(stream)} tokens, fewer than one block of {block_size}")
    return torch.tensor(stream[: n_blocks * block_size]).view(n_blocks, block_size)


def new_lm(tokenizer: PreTrainedTokenizerFast, spec: LMSpec | None = None, seed: int = 0) -> Qwen2ForCausalLM:
    """A freshly initialised Qwen2 LM of ``spec``'s shape for ``tokenizer`` (the same weights for the same seed)."""
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(lm_config(spec or LMSpec(), tokenizer))


def pretrain_lm(
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    spec: LMSpec | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Qwen2ForCausalLM, TrainLog]:
    """Pretrain a fresh Qwen2 LM on ``texts`` for ``spec.steps`` steps; returns the model and its loss log."""
    spec = spec or LMSpec()
    blocks = pack_texts(tokenizer, texts, spec.block_size, seed)
    model = new_lm(tokenizer, spec, seed)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(blocks), generator=generator)

    def loss_fn(step: int) -> torch.Tensor:
        # Walk through the blocks in a fixed random order, wrapping around (several epochs if steps allow).
        idx = order[(torch.arange(spec.batch_size) + step * spec.batch_size) % len(blocks)]
        batch = blocks[idx]
        return model(input_ids=batch, labels=batch).loss

    log = run_steps(
        model.parameters(),
        loss_fn,
        spec.steps,
        spec.lr,
        spec.weight_decay,
        spec.warmup_steps,
        "pretrain LM",
        progress,
    )
    model.eval()
    return model, log
