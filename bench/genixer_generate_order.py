"""Benchmark: Genixer generation with batches of one task vs batches that mix tasks, on the same requests.

A batch decodes until its longest output ends. Planned image by image, every batch holds each task's request for
a few images, so a one-line VQA answer waits for a dialogue; planned in windows of images, task by task
(``plan_requests(..., batch_size=B)``, the default of ``genixer generate``), each batch asks one task. Both arms
run the same requests through the same checkpoint in one run, alternating, so the ratio holds on a noisy machine.

    python bench/genixer_generate_order.py --model LAB/runs/genixer-generator/finetune/final \\
        --images LAB/genixer/data/pool --limit 128 --threads 2

It needs a trained generator: a random model's outputs do not end by task.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vlmforge.data.images import load_image
from vlmforge.synth.genixer.backends import LocalVisionGenerator
from vlmforge.synth.genixer.generate import list_images, plan_requests
from vlmforge.synth.genixer.tasks import TASKS


def run(generator: LocalVisionGenerator, images: Path, requests: list[dict], max_new_tokens: int) -> dict:
    pictures = {r["image"]: load_image(images / r["image"], r["image"]) for r in requests}
    start = time.perf_counter()
    texts = generator.generate(
        [(pictures[r["image"]], r["instruction"]) for r in requests],
        max_new_tokens=max_new_tokens, temperature=0.2, seed=0,
    )  # fmt: skip
    return {"seconds": time.perf_counter() - start, "words": sum(len(str(t).split()) for t in texts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained generator (llava-hf layout folder)")
    parser.add_argument("--images", type=Path, required=True, help="a folder of unlabeled images")
    parser.add_argument("--limit", type=int, default=128, help="images used (default 128)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    images = list_images(args.images)[: args.limit]
    generator = LocalVisionGenerator(args.model, batch_size=args.batch_size, device="cpu")
    arms = {
        "mixed tasks (image by image)": plan_requests(images, TASKS),
        "one task per batch": plan_requests(images, TASKS, batch_size=args.batch_size),
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    words: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, requests in arms.items():
            result = run(generator, args.images, requests, args.max_new_tokens)
            times[name].append(result["seconds"])
            words[name] = result["words"]
    mixed, grouped = (min(times[name]) for name in arms)
    print(json.dumps({"requests": len(arms["one task per batch"]), "seconds": times, "words": words}, indent=2))
    print(f"one task per batch: {mixed / grouped:.2f}x faster (best of {args.repeats} each)")


if __name__ == "__main__":
    main()
