"""Turn one validated record into ``input_ids`` + ``labels`` (docs/design.md, "Labels from the chat template").

"chat": the record becomes chat messages, rendered once with the model's own chat template. Which characters
belong to assistant turns is found from renders of message prefixes (character offsets), and which tokens to
label from the tokenizer's offset mapping of the full text -- never by tokenising rounds separately and counting,
so any HF chat template works and a template/tokenizer mismatch cannot silently shift the mask.

"plain" (Bunny stage-1 pretraining): image tokens, then the caption, then EOS; only caption + EOS are labelled.

Each ``<image>`` token is then expanded to the number of image features the model produces, as the LLaVA
processor does, with labels -100 there.
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Literal

from transformers.utils.chat_template_utils import render_jinja_template

from vlmforge.data.validate import IMAGE_TOKEN, record_images
from vlmforge.errors import ConfigError, DataError

IGNORE_INDEX = -100  # label value the loss skips (transformers' convention)
Template = Literal["chat", "plain"]
ROLE_OF = {"human": "user", "gpt": "assistant"}
_PROBE = "vlmforge-probe-text"
# transformers' marker for the text of assistant turns in a chat template (the same pattern it checks for).
_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class EncodedSample:
    input_ids: list[int]
    labels: list[int]
    n_images: int

    def __len__(self) -> int:
        return len(self.input_ids)


def get_tokenizer(processor: Any):
    """The tokenizer of a processor (or the argument itself when it already is a tokenizer)."""
    return getattr(processor, "tokenizer", processor)


def _image_token(processor: Any) -> str:
    return getattr(processor, "image_token", None) or IMAGE_TOKEN


def _chat_template(processor: Any) -> str:
    template = getattr(processor, "chat_template", None) or getattr(get_tokenizer(processor), "chat_template", None)
    if not isinstance(template, str) or not template:
        raise ConfigError("the processor/tokenizer has no chat template; use template='plain' or set one")
    return template


def _render(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


@functools.lru_cache(maxsize=32)
def _uses_content_parts(tokenizer, template: str, image_token: str) -> bool:
    """Whether the template renders ``[{"type": "image"}, {"type": "text"}]`` content (llava-hf style) or only
    string content (many LM templates, which would print a list's Python repr instead)."""
    probe = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": _PROBE}]}]
    try:
        text = _render(tokenizer, template, probe, add_generation_prompt=False)
    except Exception:  # noqa: BLE001 - any template failure means "not this content format"
        return False
    return text.count(image_token) == 1 and _PROBE in text and "'type'" not in text


def to_messages(record: dict, *, content_parts: bool = True, image_token: str = IMAGE_TOKEN) -> list[dict]:
    """LLaVA turns -> chat messages. Each ``<image>`` becomes an image part (or stays inline, for string-only
    templates); the newline that follows it in the Bunny layout is the template's business, so it is dropped."""
    messages = []
    for turn in record["conversations"]:
        value: str = turn["value"]
        role = ROLE_OF[turn["from"]]
        if not content_parts:
            messages.append({"role": role, "content": value.replace(IMAGE_TOKEN, image_token)})
            continue
        parts: list[dict] = []
        for index, piece in enumerate(value.split(IMAGE_TOKEN)):
            if index:
                parts.append({"type": "image"})
                piece = piece.removeprefix("\n")
            if piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": role, "content": parts})
    return messages


def _render_marked(tokenizer, template: str, messages: list[dict], where: str) -> tuple[str, list[tuple[int, int]]]:
    """One render of a template that marks assistant text with ``{% generation %}``, and the marked spans."""
    n_assistant = sum(message["role"] == "assistant" for message in messages)
    rendered, indices = render_jinja_template(
        [messages], chat_template=template, return_assistant_tokens_mask=True, **tokenizer.special_tokens_map
    )
    spans = [(start, end) for start, end in indices[0] if end > start]
    if len(spans) != n_assistant:
        raise DataError(
            where,
            f"the chat template marks {len(spans)} non-empty {{% generation %}} block(s) for {n_assistant} "
            "assistant turn(s); every assistant turn must render inside one",
            code="template_mismatch",
        )
    return rendered[0], spans


def assistant_spans(tokenizer, template: str, messages: list[dict], full: str, where: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of assistant turns in ``full``: from the end of the generation prompt to
    the end of the end-of-turn text (e.g. ``<|im_end|>``), so the model learns to stop. Whitespace the template
    puts between turns is not part of the span. Found from renders of message prefixes, which works for any
    template whose earlier turns render the same whatever follows (templates that mark assistant text with
    ``{% generation %}`` are read in one render instead, see ``_encode_chat``)."""
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, template, messages[:index], add_generation_prompt=True)
        through = _render(tokenizer, template, messages[: index + 1], add_generation_prompt=False)
        for prefix in (before, through):
            if not full.startswith(prefix):
                raise DataError(
                    where,
                    f"the chat template renders turn {index} differently inside the full conversation than as a "
                    "prefix, so assistant tokens cannot be located by offsets; use a template whose rendering of "
                    "earlier turns does not depend on later ones",
                    code="template_mismatch",
                )
        end = len(through.rstrip())
        if end <= len(before):
            raise DataError(where, f"assistant turn {index} renders as empty text", code="bad_conversation")
        spans.append((len(before), end))
    return spans


def _label_by_offsets(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    # A token is an assistant token if it overlaps an assistant span. Overlap rather than containment, so a token
    # that straddles the prompt/answer boundary (a tokenizer merging a template space into the first word) is
    # still learned: it is what the model must emit.
    # Spans are disjoint and in order, so the only span a token can overlap first is the first one ending after the
    # token's start: one bisection per token instead of a scan over every span (a third of the encoding time of
    # an 8-turn conversation).
    span_ends = [s_end for _, s_end in spans]
    labels = []
    for token, (start, end) in zip(ids, offsets, strict=True):
        i = bisect_right(span_ends, start)
        inside = end > start and i < len(spans) and end > spans[i][0]
        labels.append(token if inside else IGNORE_INDEX)
    return labels


def _tokenize(tokenizer, text: str, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]]]:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("label masking needs a fast tokenizer (offset mapping); this one is a slow tokenizer")
    encoded = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


@functools.lru_cache(maxsize=32)
def _processed_shape(image_processor, size: tuple[int, int] = (17, 13)) -> tuple[int, ...]:
    from PIL import Image

    return tuple(image_processor(Image.new("RGB", size), return_tensors="pt")["pixel_values"].shape)


def _processed_hw(image_processor) -> tuple[int, int]:
    height, width = _processed_shape(image_processor)[-2:]
    return height, width


def image_seq_length(processor: Any, pixel_values=None) -> int:
    """Feature tokens per image, computed the way ``LlavaProcessor`` does (patch grid of the processed image,
    plus additional tokens, minus CLS for the "default" strategy). ``pixel_values`` gives the processed size;
    without it a dummy image is processed once. Processors without a patch size may carry ``image_seq_length``."""
    patch_size = getattr(processor, "patch_size", None)
    if patch_size:
        height, width = (
            pixel_values.shape[-2:] if pixel_values is not None else _processed_hw(processor.image_processor)
        )
        count = (height // patch_size) * (width // patch_size) + (processor.num_additional_image_tokens or 0)
        return count - 1 if processor.vision_feature_select_strategy == "default" else count
    for attribute in ("image_seq_length", "num_image_tokens"):
        value = getattr(processor, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ConfigError("cannot tell how many tokens an image takes: the processor has no patch_size/image_seq_length")


def _one_size(image_processor: Any) -> bool:
    """Whether the image processor makes images of different sizes and shapes into one size."""
    return image_processor is not None and _processed_shape(image_processor) == _processed_shape(
        image_processor, (40, 90)
    )


def fixed_image_tokens(processor: Any) -> int | None:
    """Tokens per image when every image takes the same number whatever its pixels, so a prompt is counted from
    its number of images alone; None when the count depends on the image, which only processing it tells.

    Fixed: a stated count (``image_seq_length``/``num_image_tokens`` with no patch size: the embedding VLM), or a
    patch grid over an image processor that makes every image one size (LLaVA's resize and crop). Not fixed: an
    any-resolution processor (``image_grid_pinpoints``: tiles chosen by each image's size), an image processor
    whose output size follows the input's, or a processor with no count at all."""
    image_processor = getattr(processor, "image_processor", None)
    if getattr(image_processor, "image_grid_pinpoints", None):
        return None
    if getattr(processor, "patch_size", None) and not _one_size(image_processor):
        return None
    try:
        return image_seq_length(processor)
    except ConfigError:
        return None


def _expand_images(ids, labels, image_id: int, n_images: int, per_image: int, where: str):
    positions = [i for i, token in enumerate(ids) if token == image_id]
    if len(positions) != n_images:
        raise DataError(
            where,
            f"the rendered text holds {len(positions)} image token(s) for {n_images} image(s) (does the chat "
            "template render image parts as the processor's image token?)",
            code="image_count_mismatch",
        )
    out_ids, out_labels, last = [], [], 0
    for position in positions:
        out_ids += ids[last:position] + [image_id] * per_image
        out_labels += labels[last:position] + [IGNORE_INDEX] * per_image
        last = position + 1
    return out_ids + ids[last:], out_labels + labels[last:]


def _encode_chat(record, processor, tokenizer, where):
    template = _chat_template(processor)
    image_token = _image_token(processor)
    parts = _uses_content_parts(tokenizer, template, image_token)
    messages = to_messages(record, content_parts=parts, image_token=image_token)
    if _GENERATION_BLOCK.search(template):  # one render instead of two per assistant turn
        full, spans = _render_marked(tokenizer, template, messages, where)
    else:
        full = _render(tokenizer, template, messages, add_generation_prompt=False)
        spans = assistant_spans(tokenizer, template, messages, full, where)
    # The template owns special tokens (BOS etc.), exactly as apply_chat_template(tokenize=True) does.
    ids, offsets = _tokenize(tokenizer, full, add_special_tokens=False)
    return ids, _label_by_offsets(ids, offsets, spans)


def _encode_plain(record, processor, tokenizer, where):
    turns = record["conversations"]
    if len(turns) != 2:
        raise DataError(
            where,
            "the plain template takes one human turn and one gpt turn (image + caption)",
            code="bad_conversation",
        )
    caption = turns[1]["value"]
    prefix = _image_token(processor) * len(record_images(record, where))
    ids, offsets = _tokenize(tokenizer, prefix + caption, add_special_tokens=True)
    labels = _label_by_offsets(ids, offsets, [(len(prefix), len(prefix) + len(caption))])
    if tokenizer.eos_token_id is None:
        raise ConfigError("the plain template needs a tokenizer with an EOS token")
    if not ids or ids[-1] != tokenizer.eos_token_id:
        ids, labels = ids + [tokenizer.eos_token_id], labels + [tokenizer.eos_token_id]
    return ids, labels


def encode_conversation(
    record: dict,
    processor: Any,
    *,
    template: Template = "chat",
    max_length: int | None = None,
    pixel_values=None,
    image_tokens: int | None = None,
    where: str | None = None,
) -> EncodedSample:
    """Encode a validated record (see :func:`vlmforge.data.validate.validate_record`).

    ``processor`` is a LLaVA-style processor (or a bare tokenizer for text-only records). ``pixel_values`` (the
    processed images) or ``image_tokens`` fix the tokens per image; otherwise they are computed from the
    processor. Raises DataError ``too_long`` when the expanded sample exceeds ``max_length``: labels are never cut.
    """
    where = where or f"id={record.get('id', '?')}"
    tokenizer = get_tokenizer(processor)
    if template == "chat":
        ids, labels = _encode_chat(record, processor, tokenizer, where)
    elif template == "plain":
        ids, labels = _encode_plain(record, processor, tokenizer, where)
    else:
        raise ConfigError(f"unknown template {template!r}; use 'chat' or 'plain'")
    n_images = len(record_images(record, where))
    if n_images:
        per_image = image_tokens or image_seq_length(processor, pixel_values)
        image_id = tokenizer.convert_tokens_to_ids(_image_token(processor))
        ids, labels = _expand_images(ids, labels, image_id, n_images, per_image, where)
    if all(label == IGNORE_INDEX for label in labels):
        raise DataError(where, "no assistant token to learn from", code="bad_conversation")
    if max_length is not None and len(ids) > max_length:
        raise DataError(where, f"{len(ids)} tokens, over max_length={max_length}", code="too_long")
    return EncodedSample(ids, labels, n_images)
