"""Text-to-image sampling with classifier-free guidance, as Uni-X does it.

The conditional prompt is ``caption + INSTRUCTION + <|vision_start|>``, the unconditional one
``<unconditional><|vision_start|>``; both run in **one batch** (rows ``[:n]`` conditional, ``[n:]``
unconditional) through the KV cache. Each step mixes the raw logits, ``u + cfg * (c - u)``, masks every text id,
then applies temperature, top-k and top-p (transformers' own logits warpers) and samples. Exactly
``config.image_seq_length`` codes are drawn, so every image is complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import (
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from vlmforge.models.image_tokenizer import ImageTokenizer, check_fits
from vlmforge.models.unified.configuration import UnifiedConfig
from vlmforge.models.unified.modeling import UnifiedForCausalLM
from vlmforge.models.unified.prompts import generation_prefix


@dataclass
class ImageSampling:
    """``cfg``: guidance scale (0: unconditional only, 1: conditional only). ``temperature`` 0 takes the most
    likely code (no sampling). ``top_k`` / ``top_p``: None keeps every code. ``seed``: None draws fresh noise."""

    cfg: float = 3.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def validate(self) -> None:
        if not self.cfg >= 0:
            raise ValueError(f"cfg must be >= 0 (0: unconditional, 1: conditional only), got {self.cfg}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def warpers(self) -> LogitsProcessorList:
        warpers = LogitsProcessorList()
        if self.temperature > 0 and self.temperature != 1:
            warpers.append(TemperatureLogitsWarper(float(self.temperature)))
        if self.top_k is not None:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p is not None and self.top_p < 1:
            warpers.append(TopPLogitsWarper(self.top_p))
        return warpers


def image_prompts(
    tokenizer: PreTrainedTokenizerBase, config: UnifiedConfig, captions: Sequence[str]
) -> tuple[list[list[int]], list[int]]:
    """Token ids of each caption's conditional prompt, and of the one unconditional prompt."""
    conditional = [generation_prefix(tokenizer, config, caption) for caption in captions]
    return conditional, generation_prefix(tokenizer, config, None)


class _Rows:
    """A left-padded batch of prompts decoded step by step through its own KV cache."""

    def __init__(self, model: UnifiedForCausalLM, prompts: list[list[int]], pad: int):
        width = max(len(p) for p in prompts)
        device = model.device
        self.model = model
        self.ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        self.mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.cache = None

    def logits(self, new: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits after the prompt (``new`` None) or after appending ``new`` [rows] token ids."""
        if new is None:
            ids, positions = self.ids, self.positions
        else:
            ids, positions = new[:, None], self.positions[:, -1:] + 1
            self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
            self.positions = torch.cat([self.positions, positions], dim=1)
        out = self.model(
            ids, attention_mask=self.mask, position_ids=positions, cache=self.cache, use_cache=True, logits_to_keep=1
        )
        self.cache = out.cache
        return out.logits[:, -1].float()


def _check_lengths(model: UnifiedForCausalLM, prompts: list[list[int]]) -> None:
    context = model.config.text_config.max_position_embeddings
    longest, codes = max(len(p) for p in prompts), model.config.image_seq_length
    if longest + codes > context:
        raise ValueError(
            f"a prompt of {longest} tokens plus {codes} image codes exceeds the model's context of {context} tokens"
        )


@torch.no_grad()
def generate_image_codes(
    model: UnifiedForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    captions: Sequence[str],
    sampling: ImageSampling | None = None,
    one_batch: bool = True,
) -> torch.Tensor:
    """Codes ``[len(captions), image_seq_length]`` (codebook indices, 0-based) drawn with CFG. ``one_batch``
    False runs the conditional and unconditional prompts as two batches (the slower baseline of
    ``bench/cfg_batching.py``; same numbers up to floating-point noise)."""
    sampling = sampling or ImageSampling()
    sampling.validate()
    config = model.config
    conditional, unconditional = image_prompts(tokenizer, config, captions)
    n = len(conditional)
    _check_lengths(model, conditional)
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    if one_batch:
        batches = [_Rows(model, conditional + [unconditional] * n, pad)]
    else:
        batches = [_Rows(model, conditional, pad), _Rows(model, [unconditional] * n, pad)]
    generator = torch.Generator(device=model.device)
    if sampling.seed is None:
        generator.seed()  # fresh noise, without touching torch's global generator
    else:
        generator.manual_seed(sampling.seed)
    warpers, codes, new = sampling.warpers(), [], None
    for _ in range(config.image_seq_length):
        if one_batch:
            logits = batches[0].logits(new)
            cond, uncond = logits[:n], logits[n:]
        else:
            cond, uncond = batches[0].logits(new), batches[1].logits(new)
        mixed = uncond + sampling.cfg * (cond - uncond)
        mixed[:, : config.text_vocab_size] = -float("inf")  # only image codes may follow
        token = _pick(warpers(None, mixed), sampling.temperature, generator)
        codes.append(token - config.text_vocab_size)
        new = torch.cat([token, token]) if one_batch else token
    return torch.stack(codes, dim=1)


def _pick(scores: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    if temperature == 0:
        return scores.argmax(dim=-1)
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(1)


def generate_images(
    model: UnifiedForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    image_tokenizer: ImageTokenizer,
    captions: Sequence[str],
    sampling: ImageSampling | None = None,
) -> list[Image.Image]:
    """One image per caption: CFG-sampled codes, drawn by the image tokenizer's decoder."""
    check_fits(image_tokenizer, model.config)
    return image_tokenizer.decode(generate_image_codes(model, tokenizer, captions, sampling))
