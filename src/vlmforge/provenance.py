"""Which inputs made the work in an output folder: recorded there, and compared when a rerun would reuse it.

Why: a rerun reuses finished work (a trained stage, saved predictions), which is right only when that work was made
from the same inputs. `vlmforge train` and `vlmforge eval` stop on a difference and name it; the shapes lab moves
the old work aside instead (lab/freshness.py). A folder made before its inputs were recorded is reused as before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlmforge.errors import StaleOutputError

INPUTS_JSON = "inputs.json"
# Contents are hashed up to this many bytes: reading more on every rerun would cost more than the check saves,
# and above it file sizes and modification times stand in for the contents.
HASH_LIMIT = 256 * 2**20
_LOCAL = "local"


def path_identity(name_or_path: str | Path, hash_limit: int = HASH_LIMIT) -> dict[str, Any]:
    """Identity of a model or data path. A local file or folder: its resolved path, file count, total size, a
    digest of every file's size and modification time, and a digest of the contents when they fit ``hash_limit``.
    Anything else (a hub id) is identified by its name."""
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return {"kind": "name", "name": str(name_or_path)}
    files = _files(path)
    stats = [(p.relative_to(path).as_posix() if path.is_dir() else p.name, p.stat()) for p in files]
    listing = "".join(f"{name}:{st.st_size}:{st.st_mtime_ns}\n" for name, st in stats)
    total = sum(st.st_size for _, st in stats)
    identity = {
        "kind": _LOCAL,
        "path": str(path.resolve()),
        "files": len(stats),
        "bytes": total,
        "stat_sha256": hashlib.sha256(listing.encode()).hexdigest(),
    }
    if total <= hash_limit:
        identity["sha256"] = _digest(path, files)
    return identity


def _files(path: Path, pattern: str = "*") -> list[Path]:
    """A folder's files matching ``pattern``, sorted (or the one file ``path`` is)."""
    return sorted(p for p in path.rglob(pattern) if p.is_file()) if path.is_dir() else [path]


def files_digest(path: str | Path, pattern: str = "*") -> str:
    """SHA-256 over the names and bytes of a folder's files matching ``pattern`` (or of one file)."""
    path = Path(path)
    return _digest(path, _files(path, pattern))


def _digest(path: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _same_path(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """How two local path identities differ, in words; None when they name the same contents. Equal content
    hashes win over paths and times, so a copied or touched model still counts as the same."""
    if old.get("sha256") and new.get("sha256"):
        return None if old["sha256"] == new["sha256"] else f"the contents of {new['path']} changed"
    if old.get("path") != new.get("path"):
        return f"{old.get('path')} -> {new.get('path')}"
    if old.get("stat_sha256") != new.get("stat_sha256"):
        return f"the files in {new['path']} changed (sizes or modification times)"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(recorded: Any, current: Any, where: str = "") -> list[str]:
    """Each difference between two input records as ``key: old -> new`` (or a sentence for a changed path)."""
    if isinstance(recorded, Mapping) and isinstance(current, Mapping):
        if recorded.get("kind") == _LOCAL and current.get("kind") == _LOCAL:
            change = _same_path(recorded, current)
            return [f"{where}: {change}"] if change else []
        out = []
        for key in [*recorded, *(k for k in current if k not in recorded)]:
            inner = f"{where}.{key}" if where else str(key)
            if key not in current:
                out.append(f"{inner}: {_short(recorded[key])} -> (not set)")
            elif key not in recorded:
                out.append(f"{inner}: (not recorded) -> {_short(current[key])}")
            else:
                out += differences(recorded[key], current[key], inner)
        return out
    return [] if recorded == current else [f"{where or 'value'}: {_short(recorded)} -> {_short(current)}"]


def normalized(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` as they read back from JSON (tuples become lists), so a record compares equal to itself."""
    return json.loads(json.dumps(inputs, default=str))


def read_inputs(folder: str | Path, name: str = INPUTS_JSON) -> dict[str, Any] | None:
    path = Path(folder) / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_inputs(folder: str | Path, inputs: Mapping[str, Any], name: str = INPUTS_JSON) -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(normalized(inputs), indent=2), encoding="utf-8")
    tmp.replace(path)  # other processes of a multi-process run may read it meanwhile: never half a file
    return path


def recorded_differences(folder: str | Path, inputs: Mapping[str, Any], name: str = INPUTS_JSON) -> list[str]:
    """How ``inputs`` differ from those recorded in ``folder``; empty when they match or nothing is recorded."""
    recorded = read_inputs(folder, name)
    return [] if recorded is None else differences(recorded, normalized(inputs))


def check_inputs(
    folder: str | Path,
    inputs: Mapping[str, Any],
    what: str,
    how_to_proceed: str,
    recorded: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`StaleOutputError` when ``folder`` records other inputs than ``inputs`` (or, when given, when
    ``recorded`` differs from them); ``what`` names the work in the message, ``how_to_proceed`` ends it."""
    if recorded is None:
        changed = recorded_differences(folder, inputs)
    else:
        changed = differences(normalized(recorded), normalized(inputs))
    if changed:
        listed = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise StaleOutputError(f"{what} was made from other inputs ({listed}). {how_to_proceed}", changed)
