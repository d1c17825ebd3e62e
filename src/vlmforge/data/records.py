"""Read and write LLaVA conversation records (docs/design.md, "One record format"): JSONL for people, Parquet for scale.

A record is ``{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value": ...}], ...}``. Readers keep the
location of every record (``file.jsonl:LINE``, ``file.json:#INDEX``, ``file.parquet:#ROW``) so later errors can name
it. Bad records either raise a :class:`DataError` or, with ``on_error="skip"``, are counted in :class:`Rejections`
by reason code; they are never dropped silently.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlmforge.data.validate import validate_record
from vlmforge.errors import DataError

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
ON_ERROR_CHOICES = ("raise", "skip")
RECORD_SUFFIXES = (".jsonl", ".json", ".parquet")
EXAMPLES_PER_CODE = 5  # wheres kept (and logged) per reason: enough to find the problem, small in a manifest


@dataclass
class Rejections:
    """Records rejected by reason code (``malformed_json``, ``missing_image``, ``too_long``, ...), for manifests."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, code: str, where: str, reason: str = "") -> None:
        self.counts[code] += 1
        kept = self.examples.setdefault(code, [])
        if len(kept) < EXAMPLES_PER_CODE:
            kept.append(where)
            logger.warning("skipping record %s (%s)%s", where, code, f": {reason}" if reason else "")

    def add_error(self, err: DataError) -> None:
        self.add(err.code, err.where, err.reason)

    def update(self, other: Rejections) -> None:
        """Merge another counter (e.g. one per shard) into this one."""
        for code, n in other.counts.items():
            self.counts[code] += n
            kept = self.examples.setdefault(code, [])
            kept.extend(other.examples.get(code, [])[: EXAMPLES_PER_CODE - len(kept)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_reason": dict(sorted(self.counts.items())),
            "examples": {code: list(wheres) for code, wheres in sorted(self.examples.items())},
        }


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")


def reject(err: DataError, on_error: OnError, rejections: Rejections | None) -> None:
    """Raise ``err`` or count it: the one place that decides what a bad record does."""
    if on_error == "raise":
        raise err
    if rejections is None:  # still not silent: the log names it
        logger.warning("skipping record %s (%s): %s", err.where, err.code, err.reason)
    else:
        rejections.add_error(err)


def record_where(source: str, record: Any, index: int) -> str:
    """``file:id=<id>`` when the record has an id, else ``file:#<index>``."""
    if isinstance(record, dict) and record.get("id") not in (None, ""):
        return f"{source}:id={record['id']}"
    return f"{source}:#{index}"


def _record_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise DataError(str(path), "folder holds no .parquet files", code="no_records")
        return files
    if not path.exists():
        raise DataError(str(path), "records file does not exist", code="no_records")
    if path.suffix not in RECORD_SUFFIXES:
        raise DataError(str(path), f"unknown record file type; use one of {', '.join(RECORD_SUFFIXES)}", "no_records")
    return [path]


def _read_jsonl(path: Path) -> Iterable[tuple[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                # Without its line break, so that a line cut short reports its own last column, not line 2.
                yield where, json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                yield (
                    where,
                    DataError(where, f"malformed JSON: {err.msg} (column {err.colno})", "malformed_json"),
                )


def iter_jsonl_objects(path: str | Path) -> Iterable[tuple[str, dict]]:
    """``(file:line, record)`` for every non-empty line of a JSONL file, whatever its suffix; a malformed line or
    a non-object record raises a :class:`DataError` naming it. For readers that take no skip option."""
    for where, record in _read_jsonl(Path(path)):
        if isinstance(record, DataError):
            raise record
        if not isinstance(record, dict):
            raise DataError(where, "a record must be a JSON object", "bad_record")
        yield where, record


def _read_json(path: Path) -> Iterable[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        # One broken character spoils the whole list, so this is never skippable.
        raise DataError(
            f"{path}:{err.lineno}", f"malformed JSON: {err.msg} (column {err.colno})", "malformed_json"
        ) from err
    if not isinstance(data, list):
        raise DataError(str(path), "a .json records file must hold a list of records", "bad_record")
    for index, record in enumerate(data):
        yield record_where(str(path), record, index), record


def _read_parquet(path: Path) -> Iterable[tuple[str, Any]]:
    from datasets import Dataset

    table = Dataset.from_parquet(str(path))
    for index, row in enumerate(table):
        # Arrow fills fields a record lacks with None; a missing field and a null one mean the same here.
        record = {k: v for k, v in row.items() if v is not None and not (k == "image" and v == [])}
        yield record_where(str(path), record, index), record


def read_records(
    path: str | Path, *, on_error: OnError = "raise", rejections: Rejections | None = None
) -> list[tuple[str, dict]]:
    """Records with their locations: ``[(where, record), ...]`` from a .jsonl/.json/.parquet file or a folder of
    .parquet files. Only file-level problems (malformed JSON, a non-object record) are checked here; see
    :func:`vlmforge.data.validate.validate_record` for the content."""
    check_on_error(on_error)
    path = Path(path)
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}
    located = []
    for file in _record_files(path):
        for where, record in readers[file.suffix](file):
            if isinstance(record, DataError):
                reject(record, on_error, rejections)
            elif not isinstance(record, dict):
                reject(DataError(where, "a record must be a JSON object", "bad_record"), on_error, rejections)
            else:
                located.append((where, record))
    return located


def load_records(path: str | Path, *, on_error: OnError = "raise", rejections: Rejections | None = None) -> list[dict]:
    """Records from a .jsonl/.json/.parquet file or a folder of .parquet files (see :func:`read_records`)."""
    return [record for _, record in read_records(path, on_error=on_error, rejections=rejections)]


def _parquet_ready(records: list[dict]) -> list[dict]:
    # Arrow infers columns from the first row, so every record gets every field (None where absent). A column has
    # one type: if some records list several images, every image field becomes a list.
    keys = list(dict.fromkeys(key for record in records for key in record))
    as_lists = any(isinstance(r.get("image"), list) for r in records)
    out = []
    for record in records:
        row = {key: record.get(key) for key in keys}
        image = row.get("image")
        if as_lists and not isinstance(image, list):
            row["image"] = [] if image is None else [image]
        out.append(row)
    return out


def save_records(records: Iterable[dict], path: str | Path) -> Path:
    """Write records to ``path`` (.jsonl, one per line, UTF-8; or .parquet via ``datasets``)."""
    path = Path(path)
    records = list(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(path)  # a crash mid-write never leaves a half file under the real name
    elif path.suffix == ".parquet":
        from datasets import Dataset

        Dataset.from_list(_parquet_ready(records)).to_parquet(str(path))
    else:
        raise DataError(str(path), "records can be saved as .jsonl or .parquet", code="bad_path")
    return path


def load_valid_records(
    path: str | Path,
    image_folder: str | Path | None = None,
    *,
    on_error: OnError = "raise",
    rejections: Rejections | None = None,
) -> list[tuple[str, dict]]:
    """``[(where, record), ...]`` of the records that pass :func:`vlmforge.data.validate.validate_record` (image
    paths against ``image_folder``, default: the records file's folder), normalised; a bad one raises naming its
    file and line, or with ``on_error="skip"`` is counted in ``rejections``."""
    folder = Path(path).parent if image_folder is None else Path(image_folder)
    valid = []
    for where, record in read_records(path, on_error=on_error, rejections=rejections):
        try:
            valid.append((where, validate_record(record, where, folder)))
        except DataError as err:
            reject(err, on_error, rejections)
    return valid
