"""Training throughput on the lab's instruction data: LLaVA-style padding vs packing, and model FLOP/s vs peak.

Both arms train the same model (projector + LM, vision tower frozen: Bunny stage 2) on the same samples, once
each, in one process, alternating arms over several rounds so drift in machine speed hits both alike. Reported:

- real-token fraction of each arm (tokens that are not padding / all tokens computed),
- effective tokens/s (real tokens per second) and the packing / padding ratio,
- model FLOP/s from an analytic count (6 FLOPs per trainable weight per token, 4 per frozen-but-backpropagated
  weight, 2 per forward-only weight, plus attention) as a fraction of a float32 matmul peak measured in this run.

Usage: python bench/train_throughput.py --world runs/lab/world --foundation runs/lab/foundation [--samples 256]
(without --world/--foundation a small world and foundation are built under --workdir first).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

# The Bunny lab recipe trains on multi-turn conversations (every image asks every question type: near-uniform
# lengths); the Unicorn lab recipes on single-question records. Real LLaVA data mixes short single-question VQA
# with long conversations; the third set reproduces that spread.
DATASETS = {
    "lab conversations (Bunny recipe)": ("conversations.jsonl",),
    "single-question records (Unicorn recipes)": ("instruct.jsonl",),
    "mixed lengths (single-question + multi-turn)": ("instruct.jsonl", "conversations.jsonl"),
}


def matmul_peak(size: int = 1024, repeats: int = 20) -> float:
    """Measured float32 FLOP/s of a square matmul: the CPU's practical peak for dense work."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def model_flops_per_row(model, input_ids: torch.Tensor, n_images: int, image_tokens: int) -> float:
    """Analytic training FLOPs for one batch: LM (trainable) fwd+bwd, projector, frozen vision tower forward."""
    core = model.model
    lm_params = sum(p.numel() for n, p in core.language_model.named_parameters() if "embed_tokens" not in n)
    lm_params += model.lm_head.weight.numel()
    tokens = input_ids.numel()
    config = model.config.text_config
    seq = input_ids.shape[1]
    # causal attention scores + weighted sum: 2 matmuls of (seq x seq x hidden) per layer, halved by causality
    attention = 2 * 2 * config.num_hidden_layers * seq * config.hidden_size * tokens / 2
    lm = 6 * lm_params * tokens + 3 * attention
    vision_params = sum(p.numel() for p in core.vision_tower.parameters())
    patches = n_images * (image_tokens + 1)
    vision = 2 * vision_params * patches
    projector = 6 * sum(p.numel() for p in core.multi_modal_projector.parameters()) * n_images * image_tokens
    return lm + vision + projector


def build_inputs(args):
    from vlmforge.shapes.foundation.build import build_foundation
    from vlmforge.shapes.world import WorldConfig, build_world

    world = (
        Path(args.world)
        if args.world
        else build_world(WorldConfig(train_size=400, test_size=20), Path(args.workdir) / "world").root
    )
    foundation = (
        Path(args.foundation) if args.foundation else build_foundation(world, Path(args.workdir) / "foundation").root
    )
    return world, foundation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", help="shapes world folder (default: build a small one)")
    parser.add_argument("--foundation", help="foundation models folder (default: build small ones)")
    parser.add_argument("--workdir", default="/tmp/vlmforge-bench")
    parser.add_argument("--samples", type=int, default=192, help="instruction records per arm and round")
    parser.add_argument("--batch-size", type=int, default=16, help="padding arm: samples per batch")
    parser.add_argument("--max-length", type=int, default=512, help="packing arm: tokens per row")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)

    from vlmforge.data.dataset import ConversationDataset
    from vlmforge.data.records import load_records
    from vlmforge.models.assemble import AssemblySpec, assemble_llava

    world, foundation = build_inputs(args)
    model, processor = assemble_llava(AssemblySpec(str(foundation / "vision"), str(foundation / "lm")))
    model.config.use_cache = False
    model.model.vision_tower.requires_grad_(False)
    image_tokens = model.config.image_seq_length
    pad = processor.tokenizer.pad_token_id
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {image_tokens} image tokens; "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    for label, files in DATASETS.items():
        records = []
        for name in files:
            records += load_records(world / "train" / name)
        random.Random(0).shuffle(records)
        dataset = ConversationDataset(
            records[: args.samples], processor, image_folder=world, max_length=args.max_length
        )
        print(f"\n## {label}: {len(dataset)} samples from {' + '.join(files)}")
        compare(model, optimizer, dataset, pad, image_tokens, args)


def compare(model, optimizer, dataset, pad: int, image_tokens: int, args) -> None:
    from vlmforge.data.collate import PaddingCollator
    from vlmforge.data.packing import PackedDataset, PackingCollator

    padded = [PaddingCollator(pad)([dataset[i] for i in range(s, min(s + args.batch_size, len(dataset)))])
              for s in range(0, len(dataset), args.batch_size)]  # fmt: skip
    packed_rows = PackedDataset(dataset, args.max_length)
    rows_per_batch = max(1, round(args.batch_size * len(packed_rows) / len(dataset)))
    packed = [PackingCollator(pad)([packed_rows[i] for i in range(s, min(s + rows_per_batch, len(packed_rows)))])
              for s in range(0, len(packed_rows), rows_per_batch)]  # fmt: skip

    def count(batches):
        real = sum(int((b["labels"] != -100).sum()) for b in batches)  # supervised tokens, for reference
        non_pad = sum(
            int(b["attention_mask"].sum()) if "attention_mask" in b else int((b["input_ids"] != pad).sum())
            for b in batches
        )
        total = sum(b["input_ids"].numel() for b in batches)
        flops = sum(
            model_flops_per_row(model, b["input_ids"], b["pixel_values"].shape[0], image_tokens) for b in batches
        )
        return non_pad, total, real, flops

    def run(batches) -> float:
        start = time.perf_counter()
        for batch in batches:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    run(padded[:1] + packed[:1])  # warm-up
    stats = {"padding": count(padded), "packing": count(packed)}
    times = {"padding": [], "packing": []}
    peaks = []
    for _ in range(args.rounds):
        peaks.append(matmul_peak())
        for arm, batches in (("padding", padded), ("packing", packed)):
            times[arm].append(run(batches))
    peak = statistics.median(peaks)

    print(f"measured float32 matmul peak: {peak / 1e9:.1f} GFLOP/s (median of {args.rounds})")
    print("| arm | real-token fraction | effective tokens/s | model GFLOP/s | fraction of peak |")
    print("|---|---|---|---|---|")
    rates = {}
    for arm in ("padding", "packing"):
        non_pad, total, _real, flops = stats[arm]
        seconds = statistics.median(times[arm])
        rates[arm] = non_pad / seconds
        print(
            f"| {arm} | {non_pad / total:.3f} | {rates[arm]:.0f} | {flops / seconds / 1e9:.1f} | {flops / seconds / peak:.2f} |"
        )
    print(f"packing / padding effective tokens/s: {rates['packing'] / rates['padding']:.2f}x "
          f"(per-round ratios: {', '.join(f'{p / q:.2f}' for p, q in zip(times['padding'], times['packing'], strict=True))})")  # fmt: skip


if __name__ == "__main__":
    main()
