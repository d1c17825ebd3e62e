"""Which saved predictions a rerun of `vlmforge eval` may reuse.

An evaluation folder records the model's identity and each task's settings (``inputs.json``, see
vlmforge.provenance). A rerun into the same ``--out`` resumes only when they are the same; more tasks may be added
to a folder. Another model or other task settings stop the run with the difference named; ``force`` deletes the
folder's predictions and results and evaluates again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlmforge.eval.types import Sample, Task
from vlmforge.provenance import INPUTS_JSON, check_inputs, normalized, path_identity, read_inputs, write_inputs

# What the runner writes into its folder; force removes exactly these.
EVAL_OUTPUTS = ("samples_*.jsonl", "samples_*.jsonl.tmp", "results.json", "results.json.tmp", "report.md", "plot_*.png")


def questions_digest(samples: Sequence[Sample]) -> str:
    """SHA-256 of a task's questions (ids, prompts, images, targets): other data or wording gives other answers.
    Taken over all of them, before ``--limit``, so a longer limit still reuses the answers of a shorter one."""
    digest = hashlib.sha256()
    for s in samples:
        images = [ref if isinstance(ref, str) else hashlib.sha256(ref).hexdigest() for ref in s.images]
        digest.update(json.dumps([s.id, s.prompt, images, s.target], default=str).encode() + b"\n")
    return digest.hexdigest()


def task_settings(task: Task, samples: Sequence[Sample], data: Mapping[str, str], max_new_tokens: int) -> dict:
    """What a task's predictions depend on besides the model. The batch size and --limit are left out: they
    change how many questions are asked at once, not the answer to one."""
    return {
        "data": {key: data.get(key) for key in task.data_keys},
        "max_new_tokens": max_new_tokens,
        "questions": questions_digest(samples),
    }


def model_identity(model: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The identity of the evaluated model's folder (``model["path"]``); None when no path is given."""
    path = (model or {}).get("path")
    return path_identity(path) if path else None


def prepare_folder(
    out: Path, model: dict[str, Any] | None, settings: dict[str, dict], force: bool, write: bool
) -> None:
    """Stop when ``out`` holds predictions of another model or other task settings (unless ``force``, which
    deletes them); then record these inputs (when ``write``: on the process that writes results)."""
    recorded = read_inputs(out)
    if force:
        if write:
            for pattern in (*EVAL_OUTPUTS, INPUTS_JSON):
                for path in out.glob(pattern):
                    path.unlink()
        recorded = None
    elif recorded is not None:
        shared = [name for name in settings if name in recorded.get("tasks", {})]
        check_inputs(
            out,
            {"model": model, "tasks": {name: settings[name] for name in shared}},
            f"the evaluation in {out}",
            "Pass --force to evaluate again from scratch (its predictions and results are deleted), or choose a "
            "new --out folder.",
            recorded={"model": recorded.get("model"), "tasks": {n: recorded["tasks"][n] for n in shared}},
        )
    if write:
        tasks = {**((recorded or {}).get("tasks") or {}), **normalized(settings)}
        write_inputs(out, {"model": model, "tasks": tasks})
