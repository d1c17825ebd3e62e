"""The token layout of the unified model's three kinds of sample, defined once for training and inference.

- **Image to text** (understanding): the LM's chat template over one user turn ``<image>\\n{question}``, where the
  ``<image>`` placeholder becomes ``<|vision_start|> codes <|vision_end|>``; the answer is the assistant turn.
- **Text to image** (generation): ``caption + INSTRUCTION + <|vision_start|> codes <|vision_end|>``, Uni-X's
  layout without a chat template; the unconditional form replaces the caption with ``<unconditional>``.
- **Text only**: the text and the end-of-sequence token.

Each builder returns ``(input_ids, labels)`` with ``IGNORE_INDEX`` on what the model is not trained to produce
(the prompt and the instruction), so a collator only pads; inference takes the prompt part of the same builder,
so a trained model is always asked in the layout it learnt.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from vlmforge.data.chat import IGNORE_INDEX
from vlmforge.errors import ConfigError
from vlmforge.models.unified.configuration import UnifiedConfig

IMAGE_PLACEHOLDER = "<image>"
INSTRUCTION = " Generate an image based on this description."


def image_span(config: UnifiedConfig, codes: Sequence[int]) -> list[int]:
    """``<|vision_start|>`` + the codes as vocabulary ids + ``<|vision_end|>``; codes must fit the codebook."""
    bad = [int(c) for c in codes if not 0 <= int(c) < config.codebook_size]
    if bad:
        raise ConfigError(f"image code {bad[0]} is outside the model's codebook of {config.codebook_size} codes")
    return [config.vision_start_token_id, *(config.text_vocab_size + int(c) for c in codes), config.vision_end_token_id]


def _text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _chat_text(tokenizer: PreTrainedTokenizerBase, question: str, answer: str | None) -> str:
    messages = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{question}"}]
    if answer is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": answer})
    return tokenizer.apply_chat_template(messages, tokenize=False)


def _ids_with_image(tokenizer: PreTrainedTokenizerBase, text: str, span: list[int]) -> list[int]:
    before, found, after = text.partition(IMAGE_PLACEHOLDER)
    if not found:
        raise ConfigError(f"the tokenizer's chat template dropped the {IMAGE_PLACEHOLDER} placeholder")
    return _text_ids(tokenizer, before) + span + _text_ids(tokenizer, after)


def understanding_sample(
    tokenizer: PreTrainedTokenizerBase,
    config: UnifiedConfig,
    codes: Sequence[int],
    question: str,
    answer: str | None = None,
) -> tuple[list[int], list[int]]:
    """Image-to-text ids and labels; with ``answer=None`` the prompt that asks for the answer (labels all ignored).

    The answer's labels are the tokens the chat template adds after the generation prompt, so they include the
    template's end-of-turn token and a trained model learns where to stop."""
    if tokenizer.chat_template is None:
        raise ConfigError("the unified model's tokenizer has no chat template; image-to-text samples need one")
    span = image_span(config, codes)
    prompt = _ids_with_image(tokenizer, _chat_text(tokenizer, question, None), span)
    if answer is None:
        return prompt, [IGNORE_INDEX] * len(prompt)
    full = _ids_with_image(tokenizer, _chat_text(tokenizer, question, answer), span)
    if full[: len(prompt)] != prompt:
        raise ConfigError("the chat template renders a conversation's prompt differently from its generation prompt")
    return full, [IGNORE_INDEX] * len(prompt) + full[len(prompt) :]


def generation_prefix(tokenizer: PreTrainedTokenizerBase, config: UnifiedConfig, caption: str | None) -> list[int]:
    """The text-to-image prompt up to and including ``<|vision_start|>``; ``caption=None`` is the unconditional
    prompt ``<unconditional><|vision_start|>``."""
    if caption is None:
        return [config.unconditional_token_id, config.vision_start_token_id]
    return _text_ids(tokenizer, caption + INSTRUCTION) + [config.vision_start_token_id]


def generation_sample(
    tokenizer: PreTrainedTokenizerBase, config: UnifiedConfig, codes: Sequence[int], caption: str | None
) -> tuple[list[int], list[int]]:
    """Text-to-image ids and labels: the codes and ``<|vision_end|>`` are trained, the caption and the
    instruction are not (Uni-X masks the instruction)."""
    prefix = generation_prefix(tokenizer, config, caption)
    span = image_span(config, codes)[1:]  # the prefix already ends with <|vision_start|>
    return prefix + span, [IGNORE_INDEX] * len(prefix) + span


def text_sample(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[int]]:
    """Text-only ids and labels: every token, and the end-of-sequence token, is trained."""
    ids = _text_ids(tokenizer, text)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids, list(ids)
