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


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation_prompt: bool) -> str:
    if tokenizer.chat_template is None:
        raise ConfigError("the unified model's tokenizer has no chat template; image-to-text samples need one")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _chat_text(tokenizer: PreTrainedTokenizerBase, question: str, answer: str | None, image: bool = True) -> str:
    messages = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{question}" if image else question}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return _render(tokenizer, messages, answer is None)


def ids_with_images(tokenizer: PreTrainedTokenizerBase, text: str, spans: Sequence[list[int]]) -> list[int]:
    """Token ids of rendered chat ``text`` with its ``<image>`` placeholders replaced by ``spans``, in order."""
    pieces = text.split(IMAGE_PLACEHOLDER)
    if len(pieces) - 1 != len(spans):
        raise ConfigError(
            f"the rendered chat holds {len(pieces) - 1} {IMAGE_PLACEHOLDER} placeholder(s) for {len(spans)} image(s)"
            f" (the chat template dropped one, or a message's text holds the literal {IMAGE_PLACEHOLDER})"
        )
    ids = _text_ids(tokenizer, pieces[0])
    for span, piece in zip(spans, pieces[1:], strict=True):
        ids += [*span, *_text_ids(tokenizer, piece)]
    return ids


def understanding_sample(
    tokenizer: PreTrainedTokenizerBase,
    config: UnifiedConfig,
    codes: Sequence[int] | None,
    question: str,
    answer: str | None = None,
) -> tuple[list[int], list[int]]:
    """Image-to-text ids and labels; with ``answer=None`` the prompt that asks for the answer (labels all ignored).

    The answer's labels are the tokens the chat template adds after the generation prompt, so they include the
    template's end-of-turn token and a trained model learns where to stop. ``codes=None`` gives the same
    question and answer without the image (the text side of the conflict analysis: the same labels, no image)."""
    spans = [] if codes is None else [image_span(config, codes)]
    image = codes is not None
    prompt = ids_with_images(tokenizer, _chat_text(tokenizer, question, None, image), spans)
    if answer is None:
        return prompt, [IGNORE_INDEX] * len(prompt)
    full = ids_with_images(tokenizer, _chat_text(tokenizer, question, answer, image), spans)
    if full[: len(prompt)] != prompt:
        raise ConfigError("the chat template renders a conversation's prompt differently from its generation prompt")
    return full, [IGNORE_INDEX] * len(prompt) + full[len(prompt) :]


def conversation_text(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict]) -> str:
    """The generation prompt of a conversation in transformers' content-part format, rendered with the chat
    template, each image part an ``<image>`` placeholder on its own line: one image then a question renders
    exactly as ``understanding_sample``'s prompt does."""
    rendered = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = "\n".join(IMAGE_PLACEHOLDER if part["type"] == "image" else part["text"] for part in content)
        rendered.append({"role": message["role"], "content": content})
    return _render(tokenizer, rendered, True)


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
