"""Training throughput on the lab's instruction data: padding, length-grouped and packed batches, and the default.

Every arm trains the same model (projector + LM, vision tower frozen: Bunny stage 2) on the same samples, in
micro-batches of ``--batch-size`` samples, in one process, the arms taking turns micro-batch by micro-batch over
several rounds (each micro-batch timed at its best round) so that other work on the machine hits all alike; a
micro-batch identical to another arm's (the default's, or a packing batch where no sample shares a row) is the same
work and is timed once for both:

- padding: random batches, each padded to its longest sample (LLaVA's way);
- length_grouped: the batches of ``batching: length_grouped`` (buckets of similar length, shuffled);
- packing: random batches, each laid out by ``batching: packing``'s collator in rows of the row length the cost
  model picks from the data, samples sharing a row only where that is predicted cheaper than padding;
- default: what a stage with ``batching: auto`` uses (vlmforge.train.batching), run as its own arm.

Reported per arm: real-token fraction (the samples' tokens / all positions computed), effective tokens/s (the
samples' tokens per second), and model FLOP/s as a fraction of a float32 matmul peak measured in the same run,
both counted by vlmforge.train.flops as every stage's manifest counts them.

Usage: python bench/train_throughput.py --world runs/lab/world --foundation runs/lab/foundation [--json OUT]
(without --world/--foundation a small world and foundation are built under --workdir first), or
python bench/train_throughput.py --world W --lab-size: instead of trained foundation models, an untrained vision
tower and LM of the lab's size (vlmforge.testing.tiny.save_lab_size_parts) with the tokenizer the foundation
learns from W's text (speed depends on the models' shapes and the samples' lengths, not on the weights).
"""

from __future__ import annotations

import argparse
import json
import random
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
ARMS = ("padding", "length_grouped", "packing")


def build_inputs(args) -> tuple[Path, Path, Path]:
    """The world, and the vision tower and LM folders to assemble from."""
    from vlmforge.shapes.foundation.build import build_foundation
    from vlmforge.shapes.world import WorldConfig, build_world

    world = (
        Path(args.world)
        if args.world
        else build_world(WorldConfig(train_size=400, test_size=20), Path(args.workdir) / "world").root
    )
    if args.lab_size:
        from vlmforge.shapes.foundation.build import world_tokenizer
        from vlmforge.shapes.foundation.corpus import read_world
        from vlmforge.testing.tiny import save_lab_size_parts

        tokenizer = world_tokenizer(read_world(world, "train"))
        return (world, *save_lab_size_parts(Path(args.workdir) / "lab-size", tokenizer))
    foundation = (
        Path(args.foundation) if args.foundation else build_foundation(world, Path(args.workdir) / "foundation").root
    )
    return world, foundation / "vision", foundation / "lm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", help="shapes world folder (default: build a small one)")
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--foundation", help="foundation models folder (default: build small ones)")
    parts.add_argument(
        "--lab-size",
        action="store_true",
        help="untrained vision tower and LM of the lab's size, with the foundation's tokenizer for the world "
        "(built under --workdir in seconds)",
    )
    parser.add_argument("--workdir", default="/tmp/vlmforge-bench")
    parser.add_argument("--samples", type=int, default=192, help="instruction records per arm and round")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per micro-batch, in every arm")
    parser.add_argument("--max-length", type=int, default=1024, help="longest sample allowed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a shared CPU")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    from vlmforge.data.dataset import ConversationDataset
    from vlmforge.data.packing import disable_kv_cache
    from vlmforge.data.records import load_records
    from vlmforge.models.assemble import AssemblySpec, assemble_llava

    world, vision, lm = build_inputs(args)
    model, processor = assemble_llava(AssemblySpec(str(vision), str(lm)))
    disable_kv_cache(model)
    model.model.vision_tower.requires_grad_(False)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"{model.config.image_seq_length} image tokens; torch threads {torch.get_num_threads()}")  # fmt: skip
    results = {}
    for label, files in DATASETS.items():
        records = []
        for name in files:
            records += load_records(world / "train" / name)
        random.Random(0).shuffle(records)
        dataset = ConversationDataset(
            records[: args.samples], processor, image_folder=world, max_length=args.max_length
        )
        print(f"\n## {label}: {len(dataset)} samples from {' + '.join(files)}")
        results[label] = compare(model, optimizer, dataset, processor.tokenizer.pad_token_id, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"datasets": results}, indent=2))
        print(f"\nwrote {args.json}")


def collate_arms(model, dataset, pad: int, batch_size: int) -> tuple[dict[str, list], object]:
    """Each arm's collated micro-batches, and the plan ``batching: auto`` makes for these samples."""
    from vlmforge.data.collate import PaddingCollator
    from vlmforge.data.length_grouping import length_grouped_order
    from vlmforge.train.batching import plan_batching
    from vlmforge.train.flops import flop_model

    lengths = dataset.compute_lengths()
    images = sum(1 for _, record in dataset.items if record.get("image"))
    attention = model.config.get_text_config()._attn_implementation
    plan = plan_batching("auto", lengths, batch_size, flop_model(model), attention, images)
    shuffled = random.Random(0).sample(range(len(dataset)), len(dataset))
    grouped = length_grouped_order(lengths, batch_size, seed=0)
    samples = [dataset[i] for i in range(len(dataset))]

    def chunks(order, collate):
        return [collate([samples[i] for i in order[s : s + batch_size]]) for s in range(0, len(order), batch_size)]

    batches = {
        "padding": chunks(shuffled, PaddingCollator(pad)),
        "length_grouped": chunks(grouped, PaddingCollator(pad)),
        "packing": chunks(shuffled, plan.packing_collator(pad, max(lengths))),
    }
    return batches, plan


def timing_owners(batches: dict[str, list]) -> dict[tuple[str, int], str]:
    """For each arm's micro-batch, the first arm whose micro-batch at that index holds the very same tensors."""
    owners = {}
    for arm, arm_batches in batches.items():
        for index, batch in enumerate(arm_batches):
            owners[arm, index] = next(
                other
                for other, other_batches in batches.items()
                if index < len(other_batches)
                and other_batches[index].keys() == batch.keys()
                and all(torch.equal(other_batches[index][key], batch[key]) for key in batch)
            )
    return owners


def compare(model, optimizer, dataset, pad: int, args) -> dict:
    from vlmforge.models.kept_logits import causal_lm_loss, head_positions, supervised_positions
    from vlmforge.train.flops import batch_flops, flop_model, matmul_peak

    batches, plan = collate_arms(model, dataset, pad, args.batch_size)
    batches["default"] = batches[plan.mode]
    print(plan.log_line("auto"))
    flops = flop_model(model)
    real = sum(len(dataset[i]["input_ids"]) for i in range(len(dataset)))

    def run(batch) -> float:  # a training step as VlmTrainer takes it: the LM head on the supervised positions
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        start = time.perf_counter()
        logits = model(**inputs, logits_to_keep=supervised_positions(batch["labels"])).logits
        causal_lm_loss(logits, batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for arm_batches in batches.values():  # warm-up
        run(arm_batches[0])
    # times[arm][i]: the seconds of micro-batch i in each round. Every arm has one micro-batch per batch_size
    # samples; taking turns batch by batch, the arms share whatever else the machine does meanwhile, and the best
    # round of each micro-batch leaves out the moments another process took the cores. A micro-batch equal to an
    # earlier arm's is the same work, so it takes that one's time rather than a second draw of the machine's noise.
    owners = timing_owners(batches)
    times = {arm: [[] for _ in arm_batches] for arm, arm_batches in batches.items()}
    peaks = []
    for _ in range(args.rounds):
        peaks.append(matmul_peak())
        for index in range(max(len(b) for b in batches.values())):
            for arm, arm_batches in batches.items():
                if index < len(arm_batches) and owners[arm, index] == arm:
                    times[arm][index].append(run(arm_batches[index]))
    for (arm, index), owner in owners.items():
        times[arm][index] = times[owner][index]
    peak = max(peaks)

    print(f"measured float32 matmul peak: {peak / 1e9:.1f} GFLOP/s (best of {args.rounds})")
    print(
        "| arm | real-token fraction | effective tokens/s | model GFLOP/s | fraction of peak | packed micro-batches |"
    )
    print("|---|---|---|---|---|---|")
    arms = {}
    for arm, arm_batches in batches.items():
        seconds = sum(min(rounds) for rounds in times[arm])
        computed = sum(b["input_ids"].numel() for b in arm_batches)
        model_flops = sum(
            batch_flops(flops, b, head_positions(supervised_positions(b["labels"]), len(b["labels"])))
            for b in arm_batches
        )
        arms[arm] = {
            "effective_tokens_per_s": real / seconds,
            "real_token_fraction": real / computed,
            "fraction_of_peak": model_flops / seconds / peak,
            "packed_micro_batches": sum("attention_mask" not in b for b in arm_batches),
        }
        a = arms[arm]
        print(f"| {arm} | {a['real_token_fraction']:.3f} | {a['effective_tokens_per_s']:.0f} | "
              f"{model_flops / seconds / 1e9:.1f} | {a['fraction_of_peak']:.2f} | "
              f"{a['packed_micro_batches']} of {len(arm_batches)} |")  # fmt: skip
    best = max(arms[arm]["effective_tokens_per_s"] for arm in ARMS)
    default_over_best = arms["default"]["effective_tokens_per_s"] / best
    padding = arms["padding"]["effective_tokens_per_s"]
    rounds = "; ".join(
        ", ".join(f"{arm} {sum(t[r] for t in times[arm]):.1f}" for arm in times) for r in range(args.rounds)
    )
    print(f"seconds per round (the table takes each micro-batch's best round): {rounds}")
    print(f"default ({plan.mode}) / best arm: {default_over_best:.2f}; per padding: "
          + ", ".join(f"{arm} {arms[arm]['effective_tokens_per_s'] / padding:.2f}x" for arm in (*ARMS, "default")))  # fmt: skip
    return {"arms": arms, "default_arm": plan.mode, "default_over_best": default_over_best, "batching": plan.manifest()}


if __name__ == "__main__":
    main()
