"""Choose which judged samples to train on — a score band, the top k, or a random subset of a given size — and
mix them with the labeled records, each keeping where it came from (``provenance``).

Comparing bands is only fair at equal size, so every rule can be cut to ``n`` records, drawn with a seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from vlmforge.errors import ConfigError


def parse_band(text: str) -> tuple[float, float]:
    """``0.5:0.7`` -> (0.5, 0.7)."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"--band {text!r}: expected LOW:HIGH, e.g. 0.5:0.7") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"--band {text!r}: need 0 <= LOW < HIGH <= 1")
    return lo, hi


def in_band(score: float, lo: float, hi: float) -> bool:
    """Half-open [lo, hi), so adjacent bands never share a record; a band ending at 1 includes 1."""
    return lo <= score < hi or (hi >= 1.0 and score == hi)


def _scored(records: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    missing = [r.get("id") for r in records if not isinstance(r.get(key), int | float)]
    if missing:
        raise ConfigError(f"{len(missing)} records have no numeric '{key}' (first: {missing[0]}); judge them first")
    return list(records)


def _cut(records: list[dict[str, Any]], n: int | None, seed: int, rule: str) -> list[dict[str, Any]]:
    if n is None:
        return records
    if n > len(records):
        raise ConfigError(f"{rule}: asked for {n} records, only {len(records)} qualify")
    keep = set(random.Random(seed).sample(range(len(records)), n))
    return [r for i, r in enumerate(records) if i in keep]  # input order, whatever the draw


def select_band(records, lo: float, hi: float, *, n: int | None = None, seed: int = 0, key: str = "score"):
    chosen = [r for r in _scored(records, key) if in_band(r[key], lo, hi)]
    return _cut(chosen, n, seed, f"band {lo}:{hi}")


def select_top_k(records, k: int, *, key: str = "score") -> list[dict[str, Any]]:
    ranked = sorted(_scored(records, key), key=lambda r: (-r[key], str(r["id"])))
    return ranked[:k]


def select_random(records, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    return _cut(list(records), n, seed, "random")


def mix(selected, labeled, rule: str) -> list[dict[str, Any]]:
    """Labeled records first, then the selection; every record states its source and the rule that chose it.
    Ids must stay unique: a synthetic record whose id a labeled one already uses is renamed ``syn-<id>``."""
    out, ids = [], set()
    for r in labeled:
        prov = r.get("provenance") or {"source": "labeled"}
        out.append({**r, "provenance": prov})
        ids.add(str(r["id"]))
    for r in selected:
        rid = str(r["id"]) if str(r["id"]) not in ids else f"syn-{r['id']}"
        prov = {**(r.get("provenance") or {}), "source": "synthetic", "selection": rule}
        out.append({**r, "id": rid, "provenance": prov})
        ids.add(rid)
    return out
