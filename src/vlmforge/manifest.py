"""Every job writes ``manifest.json`` next to its results: what ran, on what, with which versions, and counts."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("vlmforge", "torch", "transformers", "peft", "accelerate", "datasets", "sentence-transformers")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """sha256 of a file (or of a folder's file listing with sizes), so a manifest pins its inputs."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{child.relative_to(path)}:{child.stat().st_size}\n".encode())
    elif path.exists():
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        return {"path": str(path), "missing": True}
    return {"path": str(path), "sha256": digest.hexdigest()}


MANIFEST = "manifest.json"


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest a finished job wrote into ``out_dir``, or None when there is none (an unfinished job)."""
    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def write_manifest(out_dir: str | Path, *, inputs: list[str] = (), **fields: Any) -> Path:
    record = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": package_versions(),
        "inputs": [file_fingerprint(p) for p in inputs],
        **fields,
    }
    path = Path(out_dir) / MANIFEST
    path.write_text(json.dumps(record, indent=2, default=str))
    return path
