"""Finished lab work is reused only for the inputs it was made from.

Why: a finished stage is skipped and an evaluation resumes from its saved predictions, and neither knows which
foundation models, recipe settings or weights made them. A rerun into the same folder with other foundation
settings (``vlmforge demo``, then ``vlmforge demo --long``) rebuilds the foundation models, and without this
check would report the earlier models' answers under the new settings. Stale work is moved aside, never deleted.
A folder made before the lab recorded its inputs has no record and is reused as before.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from vlmforge.errors import StaleOutputError
from vlmforge.provenance import files_digest, recorded_differences, write_inputs

INPUTS_JSON = "lab_inputs.json"
T = TypeVar("T")


def _move_aside(out: Path, folder: Path, why: str) -> Path:
    aside = Path(out) / "stale" / f"{folder.name}-{datetime.now():%Y%m%d-%H%M%S-%f}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(aside)
    print(f"lab: {folder} was made from other inputs ({why}); moved to {aside}, and made again")
    return aside


def set_aside_if_stale(out: Path, folder: Path, inputs: dict[str, Any]) -> Path | None:
    """Move ``folder`` to ``out/stale/`` when it records other ``inputs``; then record these in it. Returns where
    the stale folder went (None when nothing was stale)."""
    changed = recorded_differences(folder, inputs, INPUTS_JSON) if folder.is_dir() else []
    aside = _move_aside(out, folder, "; ".join(changed)) if changed else None
    write_inputs(folder, inputs, INPUTS_JSON)
    return aside


def run_fresh(out: Path, folder: Path, inputs: dict[str, Any], work: Callable[[], T]) -> T:
    """``work()`` (training or evaluating into ``folder``) on fresh ground: a folder made from other ``inputs`` is
    set aside first, and so is one that ``work`` itself finds made from other inputs (its StaleOutputError names
    models or data the lab's record does not hold); then ``work`` runs again in an empty folder."""
    set_aside_if_stale(out, folder, inputs)
    try:
        return work()
    except StaleOutputError as err:
        _move_aside(out, folder, "; ".join(err.differences) or str(err))
        write_inputs(folder, inputs, INPUTS_JSON)
        return work()


def weights_digest(model_dir: Path) -> str:
    """SHA-256 over a model folder's safetensors files (names and bytes): which weights an evaluation saw. The
    lab's models are a few MB, so this takes milliseconds."""
    return files_digest(model_dir, "*.safetensors")
