"""What the server needs from a model: the seam that lets other model types be served.

The HTTP layer and dynamic batching talk to an engine only through these protocols; continuous batching
(``continuous.py``) also drives the model step by step, so it takes a loaded ``VisionLanguageModel`` of a
LLaVA-style model (``running_batch.stepwise_support`` says which). ``VisionLanguageModel`` (LLaVA, any
other model type loaded through the Auto classes such as vlmforge's embedding-input model, and the unified Uni-X
model) is a ``TextEngine``; a unified model is also an ``ImageEngine``, which ``/v1/images/generations`` needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

from vlmforge.runtime import Completion, Conversation, SamplingParams
from vlmforge.serve.settings import ServeSettings


@runtime_checkable
class TextEngine(Protocol):
    name: str

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Completion]: ...

    def stream(self, conversations: Sequence[Conversation], params: SamplingParams) -> Iterator[list[str]]: ...


@runtime_checkable
class ImageEngine(Protocol):
    draws_images: bool
    image_size: tuple[int, int]

    def generate_images(self, prompts: Sequence[str], sampling) -> list: ...


def served_name(engine: TextEngine, settings: ServeSettings) -> str:
    """The model id clients use: ``--served-model-name``, else the engine's name (a run's name, see
    vlmforge.runtime.run_name)."""
    return settings.served_model_name or engine.name


def fit_context(
    engine: TextEngine, conversation: Conversation, params: SamplingParams, requested: bool
) -> SamplingParams:
    """Refuse a conversation the model cannot take and fit the answer into the context its prompt leaves: a
    requested max_tokens must fit (else a ContextLengthError naming both), a default one is cut to fit. Called once
    per request before it joins a batch, so both batchers and streamed replies refuse it up front. The engine's
    ``answer_budget`` also runs its own ``check`` on the prompt it counted; engines without one take every request."""
    budget = getattr(engine, "answer_budget", None)
    if budget is None:
        return params
    asked = params.max_new_tokens if requested else None
    return replace(params, max_new_tokens=budget(conversation, asked, params.max_new_tokens))


def load_engine(model_dir: str, device: str | None = None, dtype: str | None = None) -> TextEngine:
    from vlmforge.runtime import VisionLanguageModel

    return VisionLanguageModel.from_pretrained(model_dir, device=device, dtype=dtype)


def prompt_token_counts(engine: TextEngine, conversations: Sequence[Conversation]) -> list[int]:
    """Prompt lengths for usage reporting on streamed batches (``generate`` reports them itself)."""
    counts = getattr(engine, "prompt_tokens", None)
    if counts is not None:
        return counts(conversations)
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
