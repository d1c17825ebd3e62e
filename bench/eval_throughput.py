"""Evaluation throughput: batched greedy generation vs one question at a time, same model, same questions.

Both arms answer the same shapes-world test questions through ``vlmforge.runtime`` (the path ``vlmforge eval``
uses), alternating over several rounds in one process so machine drift hits both alike. The answers of the two
arms are compared too: batching (left padding) must not change a greedy answer.

Usage: python bench/eval_throughput.py --model runs/lab/runs/bunny-seed0/finetune/final --world runs/lab/world
(without --model/--world a tiny random LLaVA and a small world are built under --workdir). ``--profile`` then
shows where one more pass of each arm spends its time; ``--threads`` fixes torch's thread count, which on a
machine shared with other work decides more than either arm does.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from pathlib import Path

import torch

# Where generation spends its time: vlmforge's runtime, the processor, the vision tower, the language model.
PROFILED = "runtime.py|processing_utils.py:.*__call__|get_image_features|_prefill|_sample|apply_chat_template"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained checkpoint (default: a tiny random LLaVA)")
    parser.add_argument("--world", help="shapes world folder (default: build a small one)")
    parser.add_argument("--workdir", default="/tmp/vlmforge-bench-eval")
    parser.add_argument("--questions", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--profile", action="store_true", help="also profile one pass of each arm")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from vlmforge.eval.generator import load_generator
    from vlmforge.eval.tasks import resolve
    from vlmforge.eval.types import GenerationRequest

    workdir = Path(args.workdir)
    if args.world:
        world = Path(args.world)
    else:
        from vlmforge.shapes.world import WorldConfig, build_world

        world = build_world(WorldConfig(train_size=20, test_size=40), workdir / "world", progress=False).root
    if args.model:
        model = Path(args.model)
    else:
        from vlmforge.testing.tiny import save_tiny_llava

        model = workdir / "tiny-llava"
        if not (model / "config.json").exists():
            save_tiny_llava(model)

    data = {"world": str(world), "world_split": "test"}
    samples = []
    for task in resolve(["shapes_color", "shapes_count", "shapes_exist", "shapes_position"]):
        samples += [(task, s) for s in task.load(data)]
    samples = samples[: args.questions]
    # Decoded images, as the runner hands them to the generator: decoding is the runner's work, outside both arms.
    requests = [GenerationRequest(s.prompt, s.open_images(), task.max_new_tokens) for task, s in samples]

    batched = load_generator(model, batch_size=args.batch_size)
    single = load_generator(model, batch_size=1)
    batched(requests[:2]), single(requests[:1])  # warm-up

    times: dict[str, list[float]] = {"batched": [], "one at a time": []}
    answers = {}
    for _ in range(args.rounds):
        for name, generate in (("batched", batched), ("one at a time", single)):
            start = time.perf_counter()
            answers[name] = generate(requests)
            times[name].append(time.perf_counter() - start)

    same = sum(a == b for a, b in zip(answers["batched"], answers["one at a time"], strict=True))
    print(
        f"model: {model}; {len(requests)} questions; batch size {args.batch_size}; torch threads {torch.get_num_threads()}"
    )
    print("| arm | median seconds | questions/s |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {len(requests) / statistics.median(values):.1f} |")
    ratios = [s / b for b, s in zip(times["batched"], times["one at a time"], strict=True)]
    print(f"batched speed-up: {statistics.median(ratios):.2f}x (per round: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"identical answers: {same}/{len(requests)}")
    if args.profile:
        for name, generate in (("batched", batched), ("one at a time", single)):
            profile = cProfile.Profile()
            profile.runcall(generate, requests)
            print(f"\n## where the time goes, {name} (cumulative seconds)")
            pstats.Stats(profile).sort_stats("cumulative").print_stats(PROFILED, 12)


if __name__ == "__main__":
    main()
