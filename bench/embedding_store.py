"""Benchmark: startup + random lookups by record id, EmbeddingStore vs Unicorn's loader.

Unicorn's released loader keeps the caption embeddings as a pickled list of ``{"id", "embedding"}`` dicts and
finds a sample's embedding by scanning that list for its id (O(N) per sample). Ours maps a safetensors file and
looks ids up in a dict (O(1)). Both are measured in the same run on the same random data:

    python bench/embedding_store.py                 # 200k x 1280 float16 (~0.5 GB per copy)
    python bench/embedding_store.py --n 1000000     # the issue's figure: 1M x 1280 (2.56 GB per copy)

Startup is measured with warm page caches for both (the files were just written), so the ratio is a lower bound
for a cold start, where the baseline must read every byte and the store only the rows it touches.
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle  # ONLY for the baseline being measured (Unicorn's pickled chunks); vlmforge never uses pickle
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from vlmforge.data.embedding_store import EmbeddingStore


def make_data(root: Path, n: int, dim: int, seed: int) -> list[str]:
    """Write the same random embeddings in both formats, in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    ids = [f"cap-{i:08d}" for i in range(n)]
    array = np.empty((n, dim), dtype=np.float16)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        array[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    EmbeddingStore.write(root / "store", ids, array)
    baseline = [{"id": rid, "embedding": array[i]} for i, rid in enumerate(ids)]
    with (root / "baseline.pkl").open("wb") as f:
        pickle.dump(baseline, f, protocol=pickle.HIGHEST_PROTOCOL)
    del baseline, array
    gc.collect()
    return ids


def bench_ours(root: Path, queries: list[str]) -> tuple[float, float, np.ndarray]:
    t0 = time.perf_counter()
    store = EmbeddingStore.open(root / "store")
    t1 = time.perf_counter()
    rows = [store[q] for q in queries]
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, rows[0].numpy()


def bench_baseline(root: Path, queries: list[str]) -> tuple[float, float, np.ndarray]:
    t0 = time.perf_counter()
    with (root / "baseline.pkl").open("rb") as f:
        data = pickle.load(f)  # noqa: S301 - the baseline under test
    t1 = time.perf_counter()
    rows = []
    for q in queries:  # the O(N) scan Unicorn's dataset does per sample
        for item in data:
            if item["id"] == q:
                rows.append(item["embedding"])
                break
    t2 = time.perf_counter()
    del data
    gc.collect()
    return t1 - t0, t2 - t1, rows[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="embeddings (the issue's figure is 1,000,000)")
    ap.add_argument("--dim", type=int, default=1280, help="embedding size (LLM2CLIP: 1280)")
    ap.add_argument("--lookups", type=int, default=10_000)
    ap.add_argument(
        "--baseline-lookups",
        type=int,
        default=None,
        help="scan only this many lookups in the baseline and scale its lookup time up (it is O(N) each)",
    )
    ap.add_argument("--tmp", default=None, help="directory for the temporary data (default: system temp)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        ids = make_data(root, args.n, args.dim, args.seed)
        print(f"data: {args.n} x {args.dim} float16 written in {time.perf_counter() - t:.1f}s")
        queries = random.Random(args.seed).choices(ids, k=args.lookups)
        del ids
        ours_start, ours_look, ours_row = bench_ours(root, queries)
        k = min(args.baseline_lookups or args.lookups, args.lookups)
        base_start, base_look, base_row = bench_baseline(root, queries[:k])
        base_look *= args.lookups / k
        assert np.array_equal(ours_row, base_row), "both loaders must return the same embedding"

    ours, base = ours_start + ours_look, base_start + base_look
    scaled = f" (measured {k}, scaled to {args.lookups})" if k < args.lookups else ""
    print(f"{'':28}{'startup':>10}{'lookups':>12}{'total':>10}")
    print(f"{'EmbeddingStore (mmap+dict)':28}{ours_start:>9.3f}s{ours_look:>11.3f}s{ours:>9.3f}s")
    print(f"{'pickle list + id scan':28}{base_start:>9.3f}s{base_look:>11.3f}s{base:>9.3f}s{scaled}")
    print(f"speed-up (startup + {args.lookups} lookups): {base / ours:.1f}x  (goal >= 10x)")
    print(
        json.dumps(
            {
                "n": args.n,
                "dim": args.dim,
                "lookups": args.lookups,
                "ours_s": ours,
                "baseline_s": base,
                "ratio": base / ours,
            }
        )
    )


if __name__ == "__main__":
    main()
