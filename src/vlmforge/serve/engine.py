"""What the server needs from a model: the seam that lets other model types be served later.

The batcher and the HTTP layer talk to an engine only through these protocols. ``VisionLanguageModel``
(LLaVA, and vlmforge's embedding-input and unified models loaded through the Auto classes) is a
``TextEngine``. A model that can also draw — the unified model — adds ``generate_images`` and the server's
``/v1/images/generations`` endpoint starts answering instead of returning 501.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from PIL import Image

from vlmforge.runtime import Completion, Conversation, SamplingParams


@runtime_checkable
class TextEngine(Protocol):
    name: str

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Completion]: ...

    def stream(self, conversations: Sequence[Conversation], params: SamplingParams) -> Iterator[list[str]]: ...


@runtime_checkable
class ImageEngine(Protocol):
    def generate_images(self, prompts: Sequence[str], params: SamplingParams) -> list[Image.Image]: ...


def load_engine(model_dir: str, device: str | None = None, dtype: str | None = None) -> TextEngine:
    from vlmforge.runtime import VisionLanguageModel

    return VisionLanguageModel.from_pretrained(model_dir, device=device, dtype=dtype)


def prompt_token_counts(engine: TextEngine, conversations: Sequence[Conversation]) -> list[int]:
    """Prompt lengths for usage reporting on streamed batches (``generate`` reports them itself)."""
    prepare = getattr(engine, "prepare", None)
    if prepare is None:
        return [0] * len(conversations)
    return prepare(conversations)["attention_mask"].sum(dim=1).tolist()


def count_tokens(engine: TextEngine, text: str) -> int:
    """Tokens in a streamed answer, by re-encoding it: the stream carries text, not token ids."""
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is None or not text:
        return 0
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
