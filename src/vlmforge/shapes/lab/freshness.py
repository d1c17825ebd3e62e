"""Finished lab work is reused only for the inputs it was made from.

Why: a finished stage is skipped and an evaluation resumes from its saved predictions, and neither knows which
foundation models, recipe settings or weights made them. A rerun into the same folder with other foundation
settings (``vlmforge demo``, then ``vlmforge demo --long``) rebuilds the foundation models, and without this
check would report the earlier models' answers under the new settings. Stale work is moved aside, never deleted.
A folder made before the lab recorded its inputs has no record and is reused as before.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

INPUTS_JSON = "lab_inputs.json"


def set_aside_if_stale(out: Path, folder: Path, inputs: dict[str, Any]) -> Path | None:
    """Move ``folder`` to ``out/stale/`` when it records other ``inputs``; then record these in it. Returns where
    the stale folder went (None when nothing was stale)."""
    inputs = json.loads(json.dumps(inputs))  # as it will read back (tuples become lists)
    record = folder / INPUTS_JSON
    aside = None
    if record.is_file() and json.loads(record.read_text(encoding="utf-8")) != inputs:
        aside = Path(out) / "stale" / f"{folder.name}-{datetime.now():%Y%m%d-%H%M%S-%f}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(aside)
        print(f"lab: {folder} was made from other inputs (foundation models, recipe settings or weights); "
              f"moved to {aside}, and made again")  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(inputs, indent=2), encoding="utf-8")
    return aside


def weights_digest(model_dir: Path) -> str:
    """SHA-256 over a model folder's safetensors files (names and bytes): which weights an evaluation saw. The
    lab's models are a few MB, so this takes milliseconds."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).rglob("*.safetensors")):
        digest.update(str(path.relative_to(model_dir)).encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
