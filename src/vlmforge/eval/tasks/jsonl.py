"""The ``jsonl`` task: a user's own LLaVA records with reference answers, scored by a rule chosen per task.

A record is what `vlmforge train` reads (``id``, ``image``, ``conversations``) with the reference ``answer`` (else
the first gpt reply), optional ``choices`` (multiple choice: the answer is a letter or an option's text) and an
optional ``task`` (the group a scoring rule applies to, and a breakdown). Records pass the training data's own
validator (vlmforge.data.validate), so a record that `train` refuses is refused here too, with the same message.

``--data`` keys: ``jsonl`` (the file), ``jsonl_images`` (default: the file's folder), ``jsonl_match`` (``RULE`` for
every task and/or ``TASK:RULE`` entries, comma-separated; rules in vlmforge.eval.match) and ``jsonl_chance`` (a
number, ``auto``: derived from the answer set, or ``none``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlmforge.data.validate import EMBEDDING_FIELD, IMAGE_TOKEN, image_paths, validate_record
from vlmforge.errors import ConfigError, DataError
from vlmforge.eval import match
from vlmforge.eval.tasks import register
from vlmforge.eval.tasks.common import data_path, mc_samples, read_jsonl
from vlmforge.eval.types import Sample, Task
from vlmforge.geometry import LETTERS

_NOT_FIELDS = ("id", "answer", "conversations", "image", "choices", EMBEDDING_FIELD)


def _answer(record: Mapping[str, Any], where: str) -> Any:
    if record.get("answer") not in (None, "", []):
        return record["answer"]
    reply = next((t.get("value") for t in record["conversations"] if t.get("from") == "gpt"), None)
    if not isinstance(reply, str) or not reply.strip():
        raise DataError(where, "record has no `answer` and no gpt reply to score against", "missing_answer")
    return reply.strip()


def _validated(record: dict, where: str, folder: Path) -> dict:
    """The record as `train` checks it; one that ends on its question is checked with its answer as the reply."""
    if not isinstance(record.get("id"), str | int) or record.get("id") == "":
        raise DataError(where, "record has no `id`", "missing_field")
    if not isinstance(record.get("task", ""), str | int):
        raise DataError(where, "`task` must be a name (a string)", "bad_record")
    if record.get("choices") and not (isinstance(record["choices"], list) and len(record["choices"]) >= 2):
        raise DataError(where, "`choices` must be a list of at least two options", "bad_record")
    turns = record.get("conversations")
    if isinstance(turns, list) and turns and isinstance(turns[-1], dict) and turns[-1].get("from") == "human":
        reply = {"from": "gpt", "value": str(record.get("answer", ""))}
        record = {**record, "conversations": [*turns, reply]}
    checked = validate_record(record, where, folder)
    if checked.get(EMBEDDING_FIELD) is not None:
        raise DataError(where, f"a record with '{EMBEDDING_FIELD}' has no image to show the model", "bad_record")
    return checked


def _rules(spec: str | None, tasks: Sequence[Any]) -> tuple[str, dict[Any, str]]:
    """(rule for every task, {task: rule}) from ``jsonl_match``; a bad rule or an unknown task is a ConfigError."""
    default, per_task = "auto", {}
    for entry in (spec or "auto").split(","):
        name, sep, rule = entry.strip().rpartition(":")
        if rule not in ("auto", *match.RULES):
            raise ConfigError(f"jsonl_match: unknown rule {rule!r}; rules: auto, {', '.join(match.RULES)}")
        if not sep:
            default = rule
        elif name in {str(t) for t in tasks}:
            per_task[name] = rule
        else:
            known = ", ".join(sorted(str(t) for t in tasks if t is not None)) or "(no record has a task)"
            raise ConfigError(f"jsonl_match: no record has task {name!r}; tasks: {known}")
    return default, per_task


def _chance_option(data: Mapping[str, str]) -> float | str:
    raw = str(data.get("jsonl_chance", "auto")).strip().lower()
    if raw in ("auto", "none"):
        return raw
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"jsonl_chance must be a number in [0, 1], auto or none; got {raw!r}")
    return value


def _group_rules(records: Sequence[tuple[str, dict, Any]], data: Mapping[str, str]) -> dict[Any, tuple[str, str, Any]]:
    """{task: (rule chosen, or auto; rule of its records without choices; their derived chance or None)}."""
    tasks = list(dict.fromkeys(r.get("task") for _, r, _ in records))
    default, per_task = _rules(data.get("jsonl_match"), tasks)
    out = {}
    for task in tasks:
        answers = [a for _, r, a in records if r.get("task") == task and not r.get("choices")]
        chosen = per_task.get(str(task), default)
        rule = match.auto_rule(answers) if chosen == "auto" else chosen
        derived = 1 / match.distinct_answers(rule, answers) if answers and rule not in ("iou", "letter") else None
        out[task] = (chosen, rule, derived)
    return out


def _choice_samples(record: dict, where: str, answer: Any, rule: str, meta: dict, question: str,
                    images: list) -> list[Sample]:  # fmt: skip
    texts = [str(c) for c in record["choices"]]
    answer = str(answer).strip()
    index = LETTERS.index(answer) if answer in LETTERS[: len(texts)] else None
    if index is None and answer not in texts:
        raise DataError(where, f"answer {answer!r} is neither an option letter nor an option text")
    index = texts.index(answer) if index is None else index
    if rule == "iou":
        raise DataError(where, "scoring 'iou' needs a box answer, not options", "bad_answer")
    meta = {**meta, **match.sample_meta(rule, LETTERS[index])}
    return mc_samples(str(record["id"]), question, texts, index, circular=True, images=images, where=where,
                      meta=meta)  # fmt: skip


def _sample(record: dict, where: str, answer: Any, rule: str, meta: dict, question: str, images: list) -> Sample:
    if rule == "letter":
        raise DataError(where, "scoring 'letter' needs the record's `choices`", "bad_answer")
    if rule == "iou" and match.as_box(answer) is None:
        raise DataError(where, f"scoring 'iou' needs a box answer [x1, y1, x2, y2], got {answer!r}", "bad_answer")
    meta = {**meta, **match.sample_meta(rule, answer)}
    return Sample(id=str(record["id"]), prompt=question, target=answer, images=images, where=where, meta=meta)


def load_records(data: Mapping[str, str]) -> list[Sample]:
    """A JSONL of LLaVA records with reference answers, as samples scored by each task's rule."""
    file = data_path(data, "jsonl", "jsonl")
    folder = data_path(data, "jsonl_images", "jsonl", default=file.parent)
    records = []
    for where, raw in read_jsonl(file):
        record = _validated(raw, where, folder)
        records.append((where, record, _answer(raw, where)))
    rules, chance = _group_rules(records, data), _chance_option(data)
    out: list[Sample] = []
    for where, record, answer in records:
        chosen, rule, derived = rules[record.get("task")]
        fields = {k: v for k, v in record.items() if k not in _NOT_FIELDS and isinstance(v, str | int | float | bool)}
        meta: dict[str, Any] = {"fields": fields}
        if record.get("choices"):  # a guess right in every rotation of the options (circular evaluation)
            derived = (1 / len(record["choices"])) ** len(record["choices"])
        if chance != "none" and (derived is not None or isinstance(chance, float)):
            meta["chance"] = chance if isinstance(chance, float) else derived
        human = next(t["value"] for t in record["conversations"] if t["from"] == "human")
        question = human.replace(IMAGE_TOKEN, "").strip()
        images = [str(p) for p in image_paths(record, folder, where)]
        if record.get("choices"):
            mc_rule = "letter" if chosen == "auto" else chosen
            out.extend(_choice_samples(record, where, answer, mc_rule, meta, question, images))
        else:
            out.append(_sample(record, where, answer, rule, meta, question, images))
    return out


def mean_chance(samples: Sequence[Sample]) -> float | None:
    """The chance level of the whole task: the mean over its questions (a question's rotations once) of their own,
    when every question has one."""
    chances = list({s.group_id: s.meta.get("chance") for s in samples}.values())
    return None if not chances or None in chances else sum(chances) / len(chances)


register(Task(name="jsonl", description="Your own LLaVA records with `answer` (+ `choices`, `task`): exact, nocase, "
              "vqa, letter or iou matching per task (jsonl_match, default auto); chance from the answer set.",
              data_keys=("jsonl", "jsonl_images"), option_keys=("jsonl_match", "jsonl_chance"), load=load_records,
              parse=match.parse, judge=match.judge, score=match.match_scores, chance_from_samples=mean_chance,
              max_new_tokens=16))  # fmt: skip
