"""A saved unified model as the runtime sees it: the processor that lets `vlmforge chat`, `eval` and `serve` read
images with it, and draw them.

``UnifiedChatProcessor`` plays the part of a LLaVA processor for ``vlmforge.runtime.VisionLanguageModel``:
``apply_chat_template`` renders a conversation with ``<image>`` placeholders and calling it puts each image's codes
in their place (both from ``prompts``, so a question is asked in the layout training used), left-padded.
``draw`` samples images with classifier-free guidance. ``load_for_chat`` opens a model folder with its text
tokenizer and ``MODEL_DIR/image_tokenizer/``, and forbids image codes in generated text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from vlmforge.errors import ConfigError, ContextLengthError
from vlmforge.models.image_tokenizer import LOADER_FILE, ImageTokenizer, check_fits, load_image_tokenizer
from vlmforge.models.unified.configuration import SPECIAL_TOKENS, UnifiedConfig
from vlmforge.models.unified.generation import ImageSampling, generate_image_codes, image_prompts
from vlmforge.models.unified.modeling import UnifiedForCausalLM
from vlmforge.models.unified.prompts import IMAGE_PLACEHOLDER, conversation_text, ids_with_images, image_span

IMAGE_TOKENIZER_DIR = "image_tokenizer"


class UnifiedChatProcessor:
    """The text tokenizer and the image tokenizer of one unified model, with its config."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_tokenizer: ImageTokenizer, config: UnifiedConfig):
        check_fits(image_tokenizer, config)
        self.tokenizer, self.image_tokenizer, self.config = tokenizer, image_tokenizer, config
        self._image_size: tuple[int, int] | None = None

    @property
    def context(self) -> int:
        return self.config.text_config.max_position_embeddings

    def forbidden_in_text(self) -> list[int]:
        """Ids an answer never contains: every image code and the tokens that open, close or replace a caption."""
        c = self.config
        codes = range(c.text_vocab_size, c.text_vocab_size + c.codebook_size)
        return [c.vision_start_token_id, c.vision_end_token_id, c.unconditional_token_id, *codes]

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True, tokenize: bool = False):
        if tokenize or not add_generation_prompt:
            raise ValueError("the unified model's processor renders generation prompts as text only")
        _refuse_image_tokens(_texts(messages))
        return conversation_text(self.tokenizer, messages)

    def __call__(self, text, images=None, return_tensors: str = "pt", padding: bool = True) -> BatchEncoding:
        """Rendered conversations (``<image>`` placeholders) and their images, in order -> left-padded ids."""
        texts = [text] if isinstance(text, str) else list(text)
        counts = [t.count(IMAGE_PLACEHOLDER) for t in texts]
        images = list(images or [])
        if sum(counts) != len(images):
            raise ConfigError(f"the conversations hold {sum(counts)} image placeholder(s) for {len(images)} image(s)")
        codes = self.encode(images)
        rows, at = [], 0
        for row, (rendered, count) in enumerate(zip(texts, counts, strict=True)):
            spans = [image_span(self.config, c) for c in codes[at : at + count]]
            at += count
            rows.append(ids_with_images(self.tokenizer, rendered, spans))
            self._check_length(len(rows[-1]), row)
        return self.tokenizer.pad({"input_ids": rows}, padding=padding, return_tensors=return_tensors)

    def encode(self, images: Sequence[Image.Image]) -> list[list[int]]:
        """Each image's codes; an image the tokenizer cannot read is a clear error naming which one."""
        if not images:
            return []
        try:
            return self.image_tokenizer.encode([image.convert("RGB") for image in images]).tolist()
        except ValueError as err:
            raise ConfigError(f"the image tokenizer cannot read these images: {err}") from err

    def check_conversation(self, messages: Sequence[dict], images: int, length: int | None = None) -> None:
        """Refuse a conversation whose prompt, images counted as codes, exceeds the context (without encoding
        the images, so a server can refuse it before it joins a batch). ``length``: its ``prompt_length`` when the
        caller has counted it already."""
        _refuse_image_tokens(_texts(messages))
        self._check_length(self.prompt_length(messages, images) if length is None else length)

    def prompt_length(self, messages: Sequence[dict], images: int) -> int:
        """The conversation's prompt in tokens, each image counted as its codes and brackets (not encoded)."""
        spans = [[0] * (self.config.image_seq_length + 2)] * images
        return len(ids_with_images(self.tokenizer, conversation_text(self.tokenizer, messages), spans))

    def _check_length(self, length: int, row: int | None = None) -> None:
        if length > self.context:
            which = "" if row is None else f"conversation {row}: "
            per_image = self.config.image_seq_length + 2
            raise ContextLengthError(
                f"{which}the prompt is {length} tokens (each image {per_image}: its codes and brackets), longer than "
                f"the model's context of {self.context} tokens"
            )

    def check_drawing(self, prompts: Sequence[str], sampling: ImageSampling) -> None:
        """Refuse bad sampling settings and prompts too long to leave room for an image's codes."""
        try:
            sampling.validate()
        except ValueError as err:
            raise ConfigError(str(err)) from err
        _refuse_image_tokens(prompts)
        conditional, _ = image_prompts(self.tokenizer, self.config, prompts)
        longest = max((len(p) for p in conditional), default=0)
        if longest + self.config.image_seq_length > self.context:
            raise ContextLengthError(
                f"a prompt of {longest} tokens plus {self.config.image_seq_length} image codes exceeds the model's "
                f"context of {self.context} tokens"
            )

    def draw(self, model: UnifiedForCausalLM, prompts: Sequence[str], sampling: ImageSampling) -> list[Image.Image]:
        """One image per prompt, all in one CFG batch (conditional and unconditional rows together)."""
        self.check_drawing(prompts, sampling)
        return self.image_tokenizer.decode(generate_image_codes(model, self.tokenizer, prompts, sampling))

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the images ``draw`` makes (decoded once from a blank code grid)."""
        if self._image_size is None:
            blank = torch.zeros(1, self.config.image_seq_length, dtype=torch.long)
            self._image_size = self.image_tokenizer.decode(blank)[0].size
        return self._image_size


def _texts(messages: Sequence[dict]) -> list[str]:
    texts = []
    for message in messages:
        content = message["content"]
        texts += [content] if isinstance(content, str) else [p["text"] for p in content if p["type"] == "text"]
    return texts


def _refuse_image_tokens(texts: Sequence[str]) -> None:
    """Text that spells ``<|vision_start|>`` & co. would tokenize to the image tokens and open an image no image
    tokenizer made; only images may bring them."""
    for text in texts:
        if found := [token for token in SPECIAL_TOKENS if token in text]:
            raise ConfigError(f"the text holds {found[0]!r}, a token only images may bring")


def image_tokenizer_of(folder: str | Path) -> ImageTokenizer:
    """The image tokenizer a unified model folder carries in ``image_tokenizer/``."""
    inner = Path(folder) / IMAGE_TOKENIZER_DIR
    if not (inner / LOADER_FILE).is_file():
        raise ConfigError(
            f"{folder} has no {IMAGE_TOKENIZER_DIR}/ folder with {LOADER_FILE}: a unified model folder carries the "
            "image tokenizer it was trained with (pass one explicitly where a command offers --image-tokenizer)"
        )
    return load_image_tokenizer(inner)


def load_for_chat(
    folder: str | Path, dtype: torch.dtype = torch.float32, image_tokenizer: ImageTokenizer | None = None
) -> tuple[UnifiedForCausalLM, UnifiedChatProcessor]:
    """A saved unified model and its processor; generated text can never contain image codes (transformers'
    ``suppress_tokens`` logits processor, set on the model's generation config)."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    image_tokenizer = image_tokenizer or image_tokenizer_of(folder)
    processor = UnifiedChatProcessor(AutoTokenizer.from_pretrained(folder), image_tokenizer, model.config)
    kept = model.generation_config.suppress_tokens or []  # ids the saved model already suppresses stay suppressed
    model.generation_config.suppress_tokens = sorted({*kept, *processor.forbidden_in_text()})
    return model, processor
