"""Errors a user can act on. The CLI prints these as one line, without a stack trace."""

from __future__ import annotations


class VlmforgeError(Exception):
    """Base class: something the user can fix (bad input, bad config, missing path)."""


class DataError(VlmforgeError):
    """A bad input record. ``where`` is ``file:line`` (or ``file:record-id``) so the user can find it."""

    def __init__(self, where: str, reason: str, code: str = "invalid"):
        self.where, self.reason, self.code = where, reason, code
        super().__init__(f"{where}: {reason}")


class ConfigError(VlmforgeError):
    """A bad recipe, flag or model path."""


class ContextLengthError(ConfigError):
    """A prompt longer than the model's context; ``context`` and ``prompt_tokens`` carry the numbers when the check
    that raised it counted them, for callers that word the refusal their own way."""

    def __init__(self, message: str, context: int | None = None, prompt_tokens: int | None = None):
        self.context, self.prompt_tokens = context, prompt_tokens
        super().__init__(message)


class StaleOutputError(VlmforgeError):
    """An output folder holds work made from other inputs; reusing it would report the old work as new.
    ``differences`` lists what changed, one ``key: old -> new`` each."""

    def __init__(self, message: str, differences: list[str] | tuple[str, ...] = ()):
        self.differences = list(differences)
        super().__init__(message)
