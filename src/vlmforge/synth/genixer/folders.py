"""Output folders between stages: whether one may be resumed, and where its records' images live.

Records keep image paths relative to the folder the images came from (the LLaVA convention). Each stage records
that folder in its manifest, so the next stage finds the images without being told again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmforge.manifest import MANIFEST


def guard_resume(out_dir: Path, inputs: dict[str, Any]) -> None:
    """Resuming appends to what is there, so a folder started with other inputs or settings is refused rather
    than mixed; the first run records its inputs."""
    from vlmforge.provenance import check_inputs, write_inputs

    check_inputs(out_dir, inputs, str(out_dir), "Use another --out, or delete the folder to start over.")
    write_inputs(out_dir, inputs)


def image_folder_of(records: Path, given: Path | None = None) -> Path:
    """``given``, else the image folder the manifest beside ``records`` names, else the records' own folder."""
    if given is not None:
        return Path(given)
    manifest = Path(records).parent / MANIFEST
    if manifest.is_file():
        folder = json.loads(manifest.read_text(encoding="utf-8")).get("image_folder")
        if folder:
            return Path(folder)
    return Path(records).parent
