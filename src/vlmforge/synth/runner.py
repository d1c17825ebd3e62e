"""Drive a generating stage over records in batches, resumably, with a progress bar and a manifest.

A stage supplies one function, ``process(batch) -> BatchOutcome``; this module owns reading what is already done,
batching, saving each batch, and counting. Content rejections are final and saved (``rejected.jsonl``) so a rerun
does not pay for them again; generation failures (server down, timeouts after retries) are not saved, so the
next run retries those records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.synth.jobs import ResumableJsonl


@dataclass
class BatchOutcome:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason)
    failed: Counter = field(default_factory=Counter)  # reason -> count; records stay pending
    retries: int = 0  # extra generations spent on malformed output


def run_stage(
    records: list[dict[str, Any]],
    out_dir: Path,
    output_name: str,
    process: Callable[[list[dict[str, Any]]], BatchOutcome],
    *,
    batch_size: int,
    desc: str,
    pre_rejected: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Process the records not yet in ``out_dir`` and return the counts for the manifest. ``pre_rejected``:
    (id, reason) decided before generation (duplicates); they are saved with the other rejections."""
    from tqdm import tqdm

    output = ResumableJsonl(Path(out_dir) / output_name)
    rejected = ResumableJsonl(Path(out_dir) / "rejected.jsonl")
    rejected.append({"id": rid, "reason": reason} for rid, reason in pre_rejected)
    finished = output.done | rejected.done
    pending = [r for r in records if r["id"] not in finished]
    failed: Counter = Counter()
    retries = 0
    with tqdm(total=len(records), initial=len(records) - len(pending), desc=desc, unit="rec", disable=None) as bar:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            outcome = process(batch)
            # Accepted records go in input order, so a resumed run writes exactly what an uninterrupted one would.
            order = {r["id"]: i for i, r in enumerate(batch)}
            output.append(sorted(outcome.accepted, key=lambda r: order[r["id"]]))
            rejected.append({"id": rid, "reason": reason} for rid, reason in outcome.rejected)
            failed.update(outcome.failed)
            retries += outcome.retries
            bar.update(len(batch))
    output.path.touch()  # a stage that accepted nothing still leaves its (empty) output for the next stage to read
    return {
        "counts": {
            "input": len(records) + len(pre_rejected),
            "written": len(output.done),
            "rejected": len(rejected.done),
            "pending": len(records) + len(pre_rejected) - len(output.done) - len(rejected.done),
            "skipped_as_done": len(records) - len(pending),
            "retries_this_run": retries,
            "repaired_torn_bytes": output.repaired_bytes + rejected.repaired_bytes,
        },
        "rejections": dict(Counter(r["reason"] for r in rejected.records)),
        "failures_this_run": dict(failed),
        "tasks": dict(Counter(r["task"] for r in output.records if "task" in r)),
    }


def dedupe(
    items: list[tuple[str, dict[str, Any]]], *, text_field: str | None = None
) -> tuple[list[dict[str, Any]], list[tuple[str, str]], Counter]:
    """Drop repeated ids (kept first) and, with ``text_field``, repeated texts. Decided over the whole input
    before any work starts, so the choice is the same on every rerun. Returns (kept, text_duplicates, counts);
    text duplicates are (id, "duplicate_<field>") rejections for the stage to save."""
    seen_ids, seen_text, kept, dups = set(), {}, [], []
    counts: Counter = Counter()
    for _where, rec in items:
        if rec["id"] in seen_ids:
            counts["duplicate_id"] += 1
            continue
        seen_ids.add(rec["id"])
        if text_field is not None:
            key = " ".join(rec[text_field].split()).lower()
            if key in seen_text:
                dups.append((rec["id"], f"duplicate_{text_field}"))
                continue
            seen_text[key] = rec["id"]
        kept.append(rec)
    return kept, dups, counts
