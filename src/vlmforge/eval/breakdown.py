"""Per-field breakdowns (``--group-by FIELD``): a task's headline metric computed again on each value's samples.

A sample's field is looked up in its record's own fields first (``meta["fields"]``, which the ``jsonl`` task keeps
for every scalar field of a record) and then in its ``meta`` (``type``, ``subtask``, ``split`` of the built-in
tasks). The rotations of a circular question share their record, so a group never splits a question.

Next to the headline metric, a group whose answers form a small closed set (a question kind: colours, digits,
sides) gets ``FIELD=VALUE/answer_kind``: the share of predictions the task's judge accepts against *some* answer of
that group, right or wrong. A model that answers "What colour…?" with a colour scores 1 there even when the colour
is wrong; one that answers with a letter or a digit does not, which is what a reworded question tends to cause.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from vlmforge.errors import ConfigError
from vlmforge.eval.types import Sample, Task


def field_value(meta: Mapping[str, Any], field: str) -> Any:
    """The value of ``field`` for one sample, or None when it has none."""
    fields = meta.get("fields") or {}
    return fields[field] if field in fields else meta.get(field)


def split_by(metas: Sequence[Mapping[str, Any]], field: str) -> dict[str, list[int]]:
    """Sample indices per value of ``field`` (as text, sorted by value); samples without it are left out."""
    out: dict[str, list[int]] = {}
    for index, meta in enumerate(metas):
        value = field_value(meta, field)
        if value is not None:
            out.setdefault(str(value), []).append(index)
    return dict(sorted(out.items()))


def check_group_by(fields: Sequence[str], loaded: Mapping[str, Sequence[Sample]]) -> None:
    """Before any generation: each field must exist in some sample of some task, or the run stops naming it."""
    for field in fields:
        if not any(field_value(s.meta, field) is not None for samples in loaded.values() for s in samples):
            seen = sorted({k for samples in loaded.values() for s in samples for k in _names(s.meta)})
            raise ConfigError(
                f"--group-by {field}: no sample of task(s) {', '.join(loaded)} has that field; "
                f"fields they have: {', '.join(seen) or '(none)'}"
            )


def _names(meta: Mapping[str, Any]) -> list[str]:
    plain = [k for k, v in meta.items() if k != "fields" and isinstance(v, str | int | float | bool)]
    return [*plain, *(meta.get("fields") or {})]


def group_metrics(
    task: Task, predictions: Sequence[str], samples: Sequence[Sample], fields: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """``FIELD=VALUE/<primary>`` for every value of every field: the task's own scorer on that value's samples."""
    metas = [s.meta for s in samples]
    out: dict[str, dict[str, Any]] = {}
    for field in fields:
        for value, indices in split_by(metas, field).items():
            metrics = task.score(
                [predictions[i] for i in indices], [samples[i].target for i in indices], [metas[i] for i in indices]
            )
            if task.primary in metrics:
                out[f"{field}={value}/{task.primary}"] = metrics[task.primary]
            kind = answer_kind_rate(task, [predictions[i] for i in indices], [samples[i] for i in indices])
            if kind is not None:
                out[f"{field}={value}/answer_kind"] = {"value": kind, "n": len(indices)}
    return out


MAX_KIND_ANSWERS = 50  # more distinct answers than this is free text or boxes: no closed set to be "of the kind"


def answer_kind_rate(task: Task, predictions: Sequence[str], samples: Sequence[Sample]) -> float | None:
    """The share of ``predictions`` the task's judge accepts against some target of ``samples`` (any of them, not
    necessarily their own); None when the targets are fewer than 2 or more than ``MAX_KIND_ANSWERS`` distinct."""
    targets = list({json.dumps(s.target, sort_keys=True): s.target for s in samples}.values())
    if not 2 <= len(targets) <= MAX_KIND_ANSWERS:
        return None
    hits = 0
    for prediction, sample in zip(predictions, samples, strict=True):
        parsed = task.parse(prediction, sample.meta)
        hits += any(task.judge(parsed, target, sample.meta) > 0 for target in targets)
    return hits / len(samples)
