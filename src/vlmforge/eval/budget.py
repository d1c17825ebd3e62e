"""Each question's answer budget inside the model's context, settled before anything is generated.

A generator that knows its model's context offers ``answer_budget(request) -> int``
(``vlmforge.eval.generator.load_generator``'s counts the prompt as the server does, image tokens included): the request's
``max_new_tokens`` cut to the room the prompt leaves, or a ContextLengthError when it leaves none. A question whose
prompt leaves no room is an error naming it, or with ``on_error="skip"`` is left out of the scores and counted as a
rejection (``too_long``), as bad training records are; a cut budget is kept in the question's saved record, so
results count both from the samples files alone, across resumed and sharded runs.

A generator whose count reads only how many images a question has, not their pixels (``counts_pixels = False``:
``load_generator``'s, for any model with a fixed number of tokens per image), is counted without opening the
images: blank stand-ins take their place, so counting costs no image decoding and an unreadable image is reported
by the run that generates, as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from vlmforge.data.records import EXAMPLES_PER_CODE, OnError, Rejections, reject
from vlmforge.errors import ContextLengthError, DataError
from vlmforge.eval.types import GenerationRequest, Generator, Sample, Task

TOO_LONG = "too_long"
_STAND_IN = Image.new("RGB", (1, 1))


@dataclass
class Budgets:
    """A task's questions that do not get its whole ``max_new_tokens``: the cut ones (id -> budget) and the
    skipped ones (id -> why)."""

    cut: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def too_long(task: Task, sample: Sample, max_new_tokens: int, err: ContextLengthError) -> DataError:
    """The refusal of a question whose prompt fills the model's context, naming the task, the question and the
    numbers."""
    if err.context is None or err.prompt_tokens is None:
        numbers = str(err)
    else:
        numbers = (
            f"its prompt has {err.prompt_tokens} tokens and the model's context is {err.context}, which leaves no "
            f"room for an answer (the task allows {max_new_tokens} tokens)"
        )
    return DataError(sample.where or task.name, f"task {task.name}, question {sample.id}: {numbers}", TOO_LONG)


def _counted_images(generator: Generator, sample: Sample) -> list[Image.Image]:
    """The images a question is counted with: its own, opened, for a generator whose count reads pixels (the
    default); otherwise one stand-in per image, since only their number is read."""
    if getattr(generator, "counts_pixels", True):
        return sample.open_images()
    return [_STAND_IN] * len(sample.images)


def fit_budgets(
    generator: Generator, task: Task, samples: Sequence[Sample], max_new_tokens: int, on_error: OnError
) -> Budgets:
    """Count every question's prompt with the generator's ``answer_budget`` (a generator without one takes every
    question): a too-long question raises a DataError, or with ``on_error="skip"`` is skipped."""
    fit = getattr(generator, "answer_budget", None)
    budgets, rejections = Budgets(), Rejections()
    if fit is None:
        return budgets
    for sample in samples:
        try:
            budget = fit(GenerationRequest(sample.prompt, _counted_images(generator, sample), max_new_tokens))
        except ContextLengthError as err:
            refusal = too_long(task, sample, max_new_tokens, err)
            reject(refusal, on_error, rejections)
            budgets.skipped[sample.id] = refusal.reason
            continue
        if budget < max_new_tokens:
            budgets.cut[sample.id] = budget
    return budgets


def context_counts(samples: Sequence[Sample], answers: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """results.json's counts for a task: ``rejections`` (skipped questions by reason, as manifests count rejected
    records) and ``cut_to_context`` (answers whose budget was cut); empty when neither happened."""
    skipped = [s for s in samples if "skipped" in answers[s.id]]
    out: dict[str, Any] = {}
    if skipped:
        codes = Counter(str(answers[s.id]["skipped"]) for s in skipped)
        examples = {code: [s.where or s.id for s in skipped if answers[s.id]["skipped"] == code] for code in codes}
        trimmed = {code: wheres[:EXAMPLES_PER_CODE] for code, wheres in examples.items()}
        out["rejections"] = Rejections(codes, trimmed).as_dict()
    cut = sum("max_new_tokens" in answers[s.id] for s in samples if "skipped" not in answers[s.id])
    if cut:
        out["cut_to_context"] = cut
    return out


def scored(samples: Sequence[Sample], answers: Mapping[str, Mapping[str, Any]]) -> list[Sample]:
    """The samples that count in the scores: a question with a skipped rotation is left out whole, since a
    circular question is right only when all its rotations are."""
    dropped = {s.group_id for s in samples if "skipped" in answers[s.id]}
    return [s for s in samples if s.group_id not in dropped]
