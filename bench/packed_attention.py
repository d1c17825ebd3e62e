"""Attention over packed rows on this machine: sdpa with a dense block-diagonal mask (what transformers does with
packed ``position_ids``), per-sample attention (one causal sdpa call per sample on views of its row, or every
sample regrouped into a batch of its own for one causal sdpa call), and FlexAttention with a block mask (forward
and backward, when the device supports its backward).

Forward + backward of attention alone, at the shapes lab LM's head shape, on batches of samples packed into rows
of several lengths; the best of interleaved repeats. Compare each arm at its best row length: packing on CPU uses
the dense mask because, at the short rows the batching planner then picks, it wins here (docs/recipes.md,
*Batching*); rerun this where the answer may differ.

Usage: python bench/packed_attention.py [--heads 4] [--head-dim 32] [--batch 32] [--repeats 10]
"""

from __future__ import annotations

import argparse
import itertools
import random
import time

import torch
import torch.nn.functional as F

from vlmforge.data.packing import pack_samples
from vlmforge.train.flops import segment_lengths


def packed_rows(lengths: list[int], row: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``position_ids`` and segment numbers of ``lengths`` packed into rows of ``row`` (a padding tail last)."""
    bins = pack_samples(lengths, row)
    positions = torch.zeros(len(bins), row, dtype=torch.long)
    segments = torch.full((len(bins), row), -1)
    for r, members in enumerate(bins):
        start = 0
        for k, i in enumerate(members):
            positions[r, start : start + lengths[i]] = torch.arange(lengths[i])
            segments[r, start : start + lengths[i]] = k
            start += lengths[i]
        positions[r, start:] = torch.arange(row - start)
    return positions, segments


def segment_attention(q, k, v, positions: torch.Tensor) -> torch.Tensor:
    """Every sample of the packed rows as one sequence of a padded batch, one causal sdpa call, back to rows."""
    batch, heads, length, dim = q.shape
    starts = positions.reshape(-1) == 0
    starts[::length] = True
    segment = starts.long().cumsum(0) - 1
    token = torch.arange(starts.numel())
    first = torch.zeros(int(segment[-1]) + 1, dtype=torch.long)
    first[segment[starts]] = token[starts]
    offset = token - first[segment]
    count, longest = int(segment[-1]) + 1, int(offset.max()) + 1
    slot = segment * longest + offset
    source = torch.full((count * longest,), batch * length, dtype=torch.long)
    source[slot] = token

    def regroup(states):
        flat = states.transpose(1, 2).reshape(batch * length, heads * dim)
        flat = torch.cat([flat, flat.new_zeros(1, heads * dim)])
        return flat.index_select(0, source).view(count, longest, heads, dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(regroup(q), regroup(k), regroup(v), is_causal=True)
    return (
        out.transpose(1, 2).reshape(count * longest, heads, dim).index_select(0, slot).view(batch, length, heads, dim)
    )


def sample_calls(q, k, v, positions: torch.Tensor) -> torch.Tensor:
    """One causal sdpa call per sample on views of the packed rows (no regrouping copies), the outputs joined in
    ``segment_attention``'s layout."""
    rows = []
    for row in range(len(positions)):
        edges = [0, *itertools.accumulate(segment_lengths(positions[row : row + 1]))]
        view = [x[row : row + 1] for x in (q, k, v)]
        parts = [
            F.scaled_dot_product_attention(*(x[:, :, a:b] for x in view), is_causal=True)
            for a, b in zip(edges, edges[1:], strict=False)
        ]
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows).transpose(1, 2)


def flex_candidate(q, k, v, segments: torch.Tensor):
    """FlexAttention with a block mask, or the reason it cannot train here."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask(b, h, qi, ki):
        return (segments[b, qi] == segments[b, ki]) & (qi >= ki)

    block = create_block_mask(mask, q.shape[0], None, q.shape[2], q.shape[2], device=str(q.device))
    compiled = torch.compile(flex_attention, dynamic=False)
    try:
        compiled(q, k, v, block_mask=block).sum().backward()
    except Exception as err:  # noqa: BLE001  (any failure is the answer: it does not train here)
        return None, str(err).split(".")[0]
    return (lambda: compiled(q, k, v, block_mask=block).sum().backward()), None


def measure(lengths: list[int], row: int, args) -> tuple[dict[str, float], str | None]:
    """Best seconds of each candidate on ``lengths`` packed into rows of ``row`` (and the row count)."""
    positions, segments = packed_rows(lengths, row)
    q, k, v = (torch.randn(len(positions), args.heads, row, args.head_dim, requires_grad=True) for _ in range(3))
    causal = torch.tril(torch.ones(row, row, dtype=torch.bool))
    dense = ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]
    arms = {
        "dense": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense).sum().backward(),
        "segments": lambda: segment_attention(q, k, v, positions).sum().backward(),
        "calls": lambda: sample_calls(q, k, v, positions).sum().backward(),
    }
    with torch.no_grad():  # every arm must compute the dense mask's attention, or its time means nothing
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=dense).transpose(1, 2)
        for arm, attend in (("segments", segment_attention), ("calls", sample_calls)):
            error = (attend(q, k, v, positions) - expected).abs().max().item()
            if error > 1e-4:
                raise AssertionError(f"{arm} differs from the dense mask's attention by {error:.2g}")
    flex, why = flex_candidate(q, k, v, segments)
    if flex:
        arms["flex"] = flex
    best = dict.fromkeys(arms, float("inf"))
    for _ in range(args.repeats):
        for arm, run in arms.items():
            start = time.perf_counter()
            run()
            best[arm] = min(best[arm], time.perf_counter() - start)
    return {**best, "rows": len(positions)}, why


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32, help="samples per batch")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(0)
    cases = {
        "single questions": [rng.randint(30, 70) for _ in range(args.batch)],
        "mixed lengths": [rng.choice([rng.randint(30, 70), rng.randint(250, 450)]) for _ in range(args.batch)],
    }
    print("| samples | row | rows | dense mask ms | per-sample calls ms | regrouped ms | FlexAttention ms |")
    print("|---|---|---|---|---|---|---|")
    for name, lengths in cases.items():
        for row in (128, 256, 512, 1024):
            if row < max(lengths):
                continue
            best, why = measure(lengths, row, args)
            flex_ms = f"{best['flex'] * 1e3:.1f}" if "flex" in best else f"cannot train ({why})"
            times = " | ".join(f"{best[arm] * 1e3:.1f}" for arm in ("dense", "calls", "segments"))
            print(f"| {name} | {row} | {best['rows']} | {times} | {flex_ms} |")


if __name__ == "__main__":
    main()
