"""Resumable, recorded synthesis jobs: append-only JSONL keyed by record id, plus a manifest.

A job appends whole batches and fsyncs them, so after a crash the file holds every finished batch and at most
one torn last line. Reopening truncates the torn tail, reads the ids already written and lets the stage skip them;
a rerun therefore continues where the killed run stopped, with no record lost or written twice.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vlmforge.errors import DataError
from vlmforge.manifest import PACKAGES, package_versions


class ResumableJsonl:
    """An append-only JSONL file of records with an ``id`` key; ``done`` holds the ids already on disk."""

    def __init__(self, path: Path, key: str = "id"):
        self.path, self.key = Path(path), key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = _truncate_torn_tail(self.path)
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            with self.path.open(encoding="utf-8") as f:
                self.records = [json.loads(line) for line in f if line.strip()]
        self.done: set[str] = {str(r[key]) for r in self.records}

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        records = [r for r in records if str(r[self.key]) not in self.done]
        if not records:
            return
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        # One write + fsync per batch: the batch is either fully on disk or a torn tail the next open removes.
        with self.path.open("a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.records.extend(records)
        self.done.update(str(r[self.key]) for r in records)


def _truncate_torn_tail(path: Path) -> int:
    """Cut a partial last line (the process died mid-write); return how many bytes were removed."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    raw = path.read_bytes()
    keep = len(raw)
    if not raw.endswith(b"\n"):
        keep = raw.rfind(b"\n") + 1  # 0 when the only line is torn
    else:
        # A complete-looking last line can still be garbage if the write was cut exactly at a newline inside
        # a value; JSON never contains a raw newline, so checking that the last line parses is enough.
        last_start = raw.rfind(b"\n", 0, len(raw) - 1) + 1
        try:
            json.loads(raw[last_start:])
        except json.JSONDecodeError:
            keep = last_start
    if keep != len(raw):
        with path.open("r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return len(raw) - keep


def read_records(path: Path, *, text_field: str = "caption") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, record)`` from JSONL (``.jsonl``/``.json``; needs ``id`` and ``text_field``) or from plain
    text (any other suffix; one text per non-empty line, id ``line<N>``). ``where`` is ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "file not found", code="missing")
    jsonl = path.suffix in {".jsonl", ".json"}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if not line.strip():
                continue
            if not jsonl:
                yield where, {"id": f"line{lineno}", text_field: line.strip()}
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(where, f"not valid JSON ({err.msg})", code="bad_json") from err
            if not isinstance(rec, dict) or "id" not in rec:
                raise DataError(where, "record needs an 'id' field", code="missing_id")
            if not isinstance(rec.get(text_field), str) or not rec[text_field].strip():
                raise DataError(where, f"record needs a non-empty string '{text_field}' field", code="missing_text")
            rec["id"] = str(rec["id"])
            yield where, rec


class Manifest:
    """``manifest.json`` of one stage directory. Counts and wall time accumulate across resumed runs."""

    def __init__(self, out_dir: Path, stage: str):
        self.path = Path(out_dir) / "manifest.json"
        self.stage, self.start = stage, time.time()
        self.previous: dict[str, Any] = {}
        if self.path.exists():
            self.previous = json.loads(self.path.read_text(encoding="utf-8"))
        self.runs = int(self.previous.get("runs", 0)) + 1

    def write(self, **fields: Any) -> dict[str, Any]:
        wall = time.time() - self.start
        data = {
            "stage": self.stage,
            "runs": self.runs,
            "wall_time_s": round(wall, 3),
            "wall_time_total_s": round(float(self.previous.get("wall_time_total_s", 0.0)) + wall, 3),
            "versions": package_versions((*PACKAGES, "openai", "safetensors", "numpy")),
            **fields,
        }
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)  # atomic: a kill never leaves a half-written manifest
        return data


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Counter | set):
        return dict(obj) if isinstance(obj, Counter) else sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
