"""The few types the evaluation layer is built from: a generation request, a generator, a sample and a task."""

from __future__ import annotations

import base64
import dataclasses
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from vlmforge.errors import ConfigError, DataError


@dataclass
class GenerationRequest:
    """One greedy generation: the user's text (no ``<image>``; the generator places the images) and its images."""

    prompt: str
    images: list[Image.Image] = field(default_factory=list)
    max_new_tokens: int = 16


class Generator(Protocol):
    """Anything that answers a batch of requests with one string each, in order. One that knows its model's context
    may also offer ``answer_budget(request) -> int`` (see eval/budget.py)."""

    def __call__(self, requests: list[GenerationRequest]) -> list[str]: ...


# An image is referenced, not held, so that loading a benchmark of 10k images costs no memory:
# a path on disk or the encoded bytes (VLMEvalKit TSVs carry base64 images inline).
ImageRef = str | bytes


@dataclass
class Sample:
    """One question of a task. ``target`` and ``meta`` must be JSON-serialisable (they go to samples_*.jsonl).

    ``group`` ties together samples scored as one unit (the rotations of a circular multiple-choice question);
    ``where`` is ``file:line`` of the benchmark row, for error messages.
    """

    id: str
    prompt: str
    target: Any
    images: list[ImageRef] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    where: str = ""

    @property
    def group_id(self) -> str:
        return self.group if self.group is not None else self.id

    def open_images(self) -> list[Image.Image]:
        out = []
        for ref in self.images:
            try:
                raw = io.BytesIO(ref) if isinstance(ref, bytes) else ref
                with Image.open(raw) as img:
                    out.append(img.convert("RGB"))
            except (OSError, ValueError) as err:
                name = "inline image" if isinstance(ref, bytes) else str(ref)
                raise DataError(self.where or self.id, f"cannot read image {name}: {err}", "bad_image") from err
        return out


def decode_base64_image(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=False)
    except (ValueError, TypeError) as err:
        raise DataError(where, f"image is not valid base64: {err}", "bad_image") from err


def check_image(path: Path, where: str) -> str:
    """Fail at load time (with the benchmark row) rather than mid-run when an image is missing."""
    if not path.is_file():
        raise DataError(where, f"image not found: {path}", "missing_image")
    return str(path)


def metric(value: float | None, n: int, stderr: float | None = None) -> dict[str, Any]:
    """A metric as reported everywhere: its value, standard error and the number of units it averages over."""
    return {"value": value, "stderr": stderr, "n": n}


def proportion(k: float, n: int) -> dict[str, Any]:
    """A proportion k/n with its binomial standard error sqrt(p(1-p)/n); value None when n is 0."""
    if n == 0:
        return metric(None, 0, None)
    p = k / n
    return metric(p, n, math.sqrt(max(p * (1 - p), 0.0) / n))


def mean_metric(values: Sequence[float]) -> dict[str, Any]:
    """The mean of per-unit scores (e.g. VQA soft accuracy) with the standard error of the mean."""
    n = len(values)
    if n == 0:
        return metric(None, 0, None)
    mu = sum(values) / n
    var = sum((v - mu) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return metric(mu, n, math.sqrt(var / n))


Loader = Callable[[Mapping[str, str]], list[Sample]]
Parser = Callable[[str, Mapping[str, Any]], Any]
Judge = Callable[[Any, Any, Mapping[str, Any]], float]
Scorer = Callable[[Sequence[str], Sequence[Any], Sequence[Mapping[str, Any]]], dict[str, dict[str, Any]]]

# "reference": each benchmark parsed as its reference harness does; "robust": with the references' plain bugs fixed.
SCORING_MODES = ("reference", "robust")


@dataclass(frozen=True)
class Scoring:
    """A way to score a task: ``parse`` (raw answer -> answer), ``judge`` (answer, target -> 0..1), ``score``
    (raw answers -> metrics), as the fields of the same names in :class:`Task`."""

    parse: Parser
    judge: Judge
    score: Scorer


@dataclass(frozen=True)
class Task:
    """A benchmark, declared once: where its files are, how to load them, parse answers, judge and score.

    ``data_keys`` are the ``--data KEY=PATH`` entries the loader reads; ``option_keys`` are further ``--data`` entries
    that change only how answers are scored, so changing them rescores saved predictions instead of refusing them.
    ``parse(raw, meta)`` turns a raw prediction into the answer shown in samples_*.jsonl; ``judge(parsed, target,
    meta)`` gives that sample's correctness (0..1); ``score(predictions, targets, metas)`` computes the task's
    metrics from raw predictions. ``primary`` names the headline metric, ``chance`` its chance level (None when not
    meaningful).
    """

    name: str
    description: str
    data_keys: tuple[str, ...]
    load: Loader
    parse: Parser
    judge: Judge
    score: Scorer
    primary: str = "accuracy"
    chance: float | None = None
    max_new_tokens: int = 16
    # Resolved at load time from the data (e.g. WORLD/world.json) or from the loaded samples when the task knows
    # how; else ``chance``.
    chance_from_data: Callable[[Mapping[str, str]], float | None] | None = None
    # The parse/judge/score of ``--scoring robust``; None when the reference's rules have nothing to fix.
    robust: Scoring | None = None

    chance_from_samples: Callable[[Sequence[Sample]], float | None] | None = None
    option_keys: tuple[str, ...] = ()

    def with_scoring(self, mode: str) -> Task:
        """This task scored the ``mode`` way (see SCORING_MODES)."""
        if mode not in SCORING_MODES:
            raise ConfigError(f"unknown scoring {mode!r}; choose one of {', '.join(SCORING_MODES)}")
        if mode == "robust" and self.robust is not None:
            return dataclasses.replace(self, parse=self.robust.parse, judge=self.robust.judge, score=self.robust.score)
        return self

    @property
    def keys(self) -> tuple[str, ...]:
        """Every ``--data`` key the task reads."""
        return (*self.data_keys, *self.option_keys)

    def chance_level(self, data: Mapping[str, str], samples: Sequence[Sample] = ()) -> float | None:
        if self.chance_from_data is not None:
            found = self.chance_from_data(data)
            if found is not None:
                return found
        if self.chance_from_samples is not None and samples:
            found = self.chance_from_samples(samples)
            if found is not None:
                return found
        return self.chance
