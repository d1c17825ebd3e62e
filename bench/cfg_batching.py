"""Benchmark: classifier-free guidance with the conditional and unconditional prompts in one batch, against two
passes (one batch each), on the same unified model and prompts, in one run.

Uni-X puts both in one batch; two passes is the straightforward alternative. Both decode greedily, so they
draw the same codes up to floating-point noise (a batch of another size may sum in another order and flip a
near tie; ``same_codes`` reports the share that agree), and the ratio is the speed of batching alone:

    python bench/cfg_batching.py                          # a small random two_end model, 8 captions x 256 codes
    python bench/cfg_batching.py --hidden 896 --layers 24 --heads 14 --kv-heads 2 --device cuda   # Qwen2.5-0.5B's shape

The model is random (its speed does not depend on its weights) and built in memory; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from vlmforge.models.unified import UnifiedSpec, build_unified
from vlmforge.models.unified.generation import ImageSampling, generate_image_codes
from vlmforge.testing.tiny import tiny_tokenizer

CAPTIONS = [
    "There are 2 objects. A large red circle at the top left. A small blue square in the center.",
    "There is 1 object. A small green triangle on the right.",
    "There are 3 objects. A large yellow star at the top. A small purple cross on the left. A large orange diamond at the bottom.",
    "There is 1 object. A large blue circle in the center.",
]


def build(args) -> tuple:
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.hidden * 3,
            num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
            max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    )  # fmt: skip
    spec = UnifiedSpec(
        arm=args.arm,
        encode_layers=args.split if args.arm == "two_end" else 0,
        decode_layers=args.split if args.arm == "two_end" else 0,
        codebook_size=args.codebook,
        image_grid=(args.grid, args.grid),
    )
    model, tokenizer = build_unified(lm, tokenizer, spec)
    return model.to(args.device, getattr(torch, args.dtype)).eval(), tokenizer


def timed(model, tokenizer, captions, one_batch: bool) -> tuple[float, torch.Tensor]:
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    codes = generate_image_codes(model, tokenizer, captions, ImageSampling(cfg=3.0, temperature=0), one_batch)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--arm", choices=["shared", "two_end"], default="two_end")
    parser.add_argument("--split", type=int, default=1, help="E = D for the two_end arm (default %(default)s)")
    parser.add_argument("--codebook", type=int, default=512)
    parser.add_argument("--grid", type=int, default=16, help="codes per image = grid^2 (default %(default)s)")
    parser.add_argument("--captions", type=int, default=8, help="images per call (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = build(args)
    captions = (CAPTIONS * args.captions)[: args.captions]
    timed(model, tokenizer, captions[:2], True)  # warm-up: first-call allocations
    times: dict[str, list[float]] = {"one_batch": [], "two_passes": []}
    codes = {}
    for _ in range(args.repeats):  # alternate, so drift in the machine's speed hits both arms alike
        for arm, one_batch in (("one_batch", True), ("two_passes", False)):
            seconds, codes[arm] = timed(model, tokenizer, captions, one_batch)
            times[arm].append(seconds)
    same = float((codes["one_batch"] == codes["two_passes"]).float().mean())
    medians = {arm: statistics.median(t) for arm, t in times.items()}
    # Best of the repeats for the headline, as timeit does: other load on a shared machine only ever adds time.
    best = {arm: min(t) for arm, t in times.items()}
    report = {
        "device": str(model.device),
        "model": {"hidden": args.hidden, "layers": args.layers, "arm": args.arm, **model.parameter_counts()},
        "images": len(captions),
        "codes_per_image": model.config.image_seq_length,
        "seconds": {arm: [round(t, 3) for t in ts] for arm, ts in times.items()},
        "median_seconds": {arm: round(t, 3) for arm, t in medians.items()},
        "best_seconds": {arm: round(t, 3) for arm, t in best.items()},
        "speedup_one_batch": round(best["two_passes"] / best["one_batch"], 2),
        "speedup_one_batch_medians": round(medians["two_passes"] / medians["one_batch"], 2),
        "same_codes": round(same, 4),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
