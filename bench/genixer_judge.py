"""Benchmark: judging generated samples by one forward pass (p_yes) vs by sampling an answer (the released way).

Both arms score the same records with the same local checkpoint in one run, so the ratio holds on any machine:

- p_yes: ``LocalJudge.p_yes``, records batched, one forward pass each, the next-token logits of Yes and No;
- released: ``LocalJudge.released`` one record at a time, as the released script runs, sampling up to 10 tokens
  (top-p 0.95, top-k 10) and scoring them;
- released, 2 tokens: the same, capped at 2 new tokens ("Yes" + end of sequence), the least any sampled answer
  costs: a floor for the ratio whatever the judge answers.

    python bench/genixer_judge.py                    # a small random LLaVA built here (no download)
    python bench/genixer_judge.py --model runs/lab/bunny/final --threads 2

A random model rarely ends its answer early, so the 10-token arm is the released script's worst case; the
2-token arm is its best.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from vlmforge.models.assemble import AssemblySpec, assemble_llava
from vlmforge.synth.genixer.judge import JUDGE_PROMPT
from vlmforge.synth.genixer.judges import LocalJudge
from vlmforge.testing.tiny import save_tiny_lm, save_tiny_vision

YES_NO = ["Is it red? Yes", "Is it blue? No", "Yes", "No"] * 40


def build_model(root: Path, hidden: int, layers: int) -> Path:
    vision = save_tiny_vision(root / "vision", image_size=64, patch_size=8, hidden=128)
    lm = save_tiny_lm(root / "lm", hidden=hidden, layers=layers, extra_text=YES_NO)
    model, processor = assemble_llava(AssemblySpec(str(vision), str(lm)))
    model.save_pretrained(root / "llava")
    processor.save_pretrained(root / "llava")
    return root / "llava"


def make_items(n: int) -> list[tuple[Image.Image, str]]:
    colors = ["red", "blue", "green", "yellow", "purple", "orange"]
    items = []
    for i in range(n):
        qa = f"Question: What colour is the shape in the corner? Answer: {colors[i % 6]}"
        items.append((Image.new("RGB", (64, 64), colors[(i * 5) % 6]), JUDGE_PROMPT.format(qa=qa)))
    return items


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a llava-hf layout checkpoint (default: a small random one built here)")
    parser.add_argument("--n", type=int, default=32, help="records judged by each arm")
    parser.add_argument("--batch-size", type=int, default=16, help="p_yes batch size")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=3, help="arms alternate this many times; medians reported")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_model(Path(tmp), args.hidden, args.layers))
        batched = LocalJudge(model, batch_size=args.batch_size, device="cpu")
        single = LocalJudge(model, batch_size=1, device="cpu")
        single.vlm = batched.vlm  # the same weights in memory for every arm
        items = make_items(args.n)
        batched.p_yes(items[:2])  # warm-up: first-call allocations and the single-token check
        single.released(items[:2])
        arms = {
            "p_yes_forward": lambda: batched.p_yes(items),
            "released_sampled_10": lambda: single.released(items),
            "released_sampled_2": lambda: single.released(items, max_new_tokens=2),
        }
        # Interleaved rounds: a load spike from another process on a shared machine hits every arm, not one.
        runs = {name: [] for name in arms}
        for _ in range(args.rounds):
            for name, fn in arms.items():
                runs[name].append(timed(fn))
        seconds = {name: statistics.median(times) for name, times in runs.items()}
    result = {
        "model": args.model or f"random llava (lm hidden {args.hidden}, {args.layers} layers)",
        "records": args.n,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "median_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "all_seconds": {k: [round(t, 3) for t in v] for k, v in runs.items()},
        "records_per_s": {k: round(args.n / v, 2) for k, v in seconds.items()},
        "speedup_vs_released_10": round(seconds["released_sampled_10"] / seconds["p_yes_forward"], 2),
        "speedup_vs_released_2": round(seconds["released_sampled_2"] / seconds["p_yes_forward"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
