"""Reading benchmark files: JSON / JSONL / TSV with errors that name the file and row, data-key lookup, and the
prompt pieces shared by several tasks."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlmforge.data.records import iter_jsonl_objects
from vlmforge.errors import ConfigError, DataError
from vlmforge.eval.types import Sample
from vlmforge.geometry import LETTERS, options_block

SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."


def data_path(data: Mapping[str, str], key: str, task: str, default: Path | None = None) -> Path:
    """The path given as ``--data KEY=PATH`` (or ``default``); a clear error when absent or missing on disk."""
    raw = data.get(key)
    path = Path(raw).expanduser() if raw else default
    if path is None:
        raise ConfigError(f"task {task!r} needs its data: pass --data {key}=PATH (see docs/evaluation.md)")
    if not path.exists():
        raise ConfigError(f"task {task!r}: {key}={path} does not exist")
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}", f"invalid JSON: {err.msg} (column {err.colno})") from err


def read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``file:line``, record) for every non-empty line; a malformed line is a DataError naming it."""
    yield from iter_jsonl_objects(path)


def read_json_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A file that is either JSONL or one JSON list (POPE ships both ways)."""
    head = path.read_text(encoding="utf-8").lstrip()[:1]
    if head == "[":
        for i, record in enumerate(read_json(path)):
            yield f"{path}:record {i}", record
    else:
        yield from read_jsonl(path)


def read_tsv(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """VLMEvalKit TSV rows as dicts; a row with the wrong number of fields is a DataError naming its line."""
    csv.field_size_limit(sys.maxsize)  # base64 images are far longer than csv's default field limit
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")  # pandas-style quoting, as VLMEvalKit writes
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}:1", "empty TSV (no header row)")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(where, f"malformed TSV row: {len(row)} fields, header has {len(header)}")
            yield where, dict(zip(header, row, strict=True))


def require(record: Mapping[str, Any], fields: Sequence[str], where: str) -> None:
    missing = [f for f in fields if record.get(f) in (None, "")]
    if missing:
        raise DataError(where, f"missing field(s): {', '.join(missing)}", "missing_field")


def mc_prompt(question: str, choices: Mapping[str, str], hint: str | None = None) -> str:
    """LLaVA's multiple-choice prompt: [hint], question, lettered options, then the option-letter instruction."""
    head = f"{hint}\n{question}" if hint else question
    return f"{head}\n{options_block(choices)}\n{OPTION_LETTER}"


def rotations(sample_id: str, texts: Sequence[str], answer_index: int) -> list[tuple[str, dict[str, str], str, int]]:
    """Circular evaluation: (id, choices, answer letter, k) for each rotation of the options by k places."""
    out = []
    n = len(texts)
    for k in range(n):
        order = [(k + j) % n for j in range(n)]
        choices = {LETTERS[j]: texts[i] for j, i in enumerate(order)}
        out.append((f"{sample_id}#r{k}", choices, LETTERS[order.index(answer_index)], k))
    return out


def mc_samples(
    sample_id: str, question: str, texts: Sequence[str], answer_index: int, *, circular: bool,
    images: list, where: str, meta: Mapping[str, Any] | None = None, hint: str | None = None,
) -> list[Sample]:  # fmt: skip
    """One sample (or one per rotation when ``circular``) of a multiple-choice question."""
    rots = rotations(sample_id, texts, answer_index)
    if not circular:
        rots = [(sample_id, *rots[0][1:])]
    return [
        Sample(
            id=rid, prompt=mc_prompt(question, choices, hint), target=answer, images=images, where=where,
            meta={**(meta or {}), "choices": choices, "group": sample_id, "rotation": k}, group=sample_id,
        )
        for rid, choices, answer, k in rots
    ]  # fmt: skip
