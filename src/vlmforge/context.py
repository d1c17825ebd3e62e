"""A request's token budget inside a model's context: the prompt and the answer together must fit, as in vLLM and
OpenAI's API (their error wording, so clients that parse it keep working)."""

from __future__ import annotations

from vlmforge.errors import ContextLengthError


def answer_budget(context: int | None, prompt_tokens: int, requested: int | None, default: int) -> int:
    """The most tokens the answer may have: ``requested`` when the prompt and it fit in ``context``, else a
    ``ContextLengthError`` naming the numbers; with nothing requested, ``default`` cut to the room the prompt leaves.
    A model of unknown context (``None``) takes any request."""
    wanted = default if requested is None else requested
    if context is None:
        return wanted
    if prompt_tokens >= context:
        raise ContextLengthError(
            f"This model's maximum context length is {context} tokens; the prompt has {prompt_tokens} tokens, "
            "which leaves no room for an answer. Please shorten the messages.",
            context,
            prompt_tokens,
        )
    if requested is None:
        return min(default, context - prompt_tokens)
    if prompt_tokens + requested > context:
        raise ContextLengthError(
            f"This model's maximum context length is {context} tokens; the prompt has {prompt_tokens} tokens and "
            f"max_tokens asks for {requested} more ({prompt_tokens + requested} in all). Please shorten the "
            f"messages or ask for at most {context - prompt_tokens} tokens.",
            context,
            prompt_tokens,
        )
    return requested
