"""vlmforge eval vs lmms-eval's llava_hf: the same exported model on the same questions, timed in one process.

The questions of a few shapes-world tasks are written as an lmms-eval local task (``vlmforge.eval.lmms``); both
harnesses load the model once, then evaluate all the questions in alternating rounds, so that machine drift hits
both alike: ``vlmforge.eval.evaluate`` with its batched generator (and, as a third arm, one question at a time) and
``lmms_eval.evaluator.simple_evaluate`` with its ``llava_hf`` model (one question at a time: it refuses batches).
Each round is the harness's whole evaluation call: loading the questions, generating, scoring, writing results.
The answers are compared question by question.

Usage: python bench/eval_vs_lmms_eval.py --model runs/lab/runs/bunny-seed0/finetune/final --world runs/lab/world
(without --model/--world a tiny random LLaVA and a small world are built under --workdir). Needs lmms-eval.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

TASKS = ("shapes_color", "shapes_count", "shapes_exist", "shapes_position")


def _inputs(args) -> tuple[Path, Path]:
    workdir = Path(args.workdir)
    if args.world:
        world = Path(args.world)
    else:
        from vlmforge.shapes.world import WorldConfig, build_world

        world = build_world(WorldConfig(train_size=20, test_size=40), workdir / "world", progress=False).root
    if args.model:
        return Path(args.model), world
    from vlmforge.testing.tiny import save_tiny_llava

    model = workdir / "tiny-llava"
    if not (model / "config.json").exists():
        save_tiny_llava(model)
    return model, world


def _lmms_model(model: Path):
    from lmms_eval.models import get_model

    model_args = f"pretrained={model},device=cpu,dtype=float32,device_map=cpu"
    return get_model("llava_hf").create_from_arg_string(model_args, {"batch_size": 1})


def _lmms_round(lm, module, names: list[str], task_manager) -> dict[str, list[str]]:
    from lmms_eval.evaluator import simple_evaluate

    lm._model = module  # simple_evaluate deletes the model when it ends (lm.clean()); the next round reuses it
    results = simple_evaluate(model=lm, tasks=names, batch_size=1, log_samples=True, bootstrap_iters=0,
                              task_manager=task_manager, verbosity="WARNING")  # fmt: skip
    answers = {}
    for name in names:
        rows = sorted(results["samples"][name], key=lambda r: r["doc_id"])
        answers[name] = [r["filtered_resps"][0] if isinstance(r["filtered_resps"], list) else r["filtered_resps"]
                         for r in rows]  # fmt: skip
    return answers


def _vlmforge_round(generator, data, limit: int, batch_size: int, out: Path) -> dict[str, list[str]]:
    from vlmforge.eval import evaluate

    shutil.rmtree(out, ignore_errors=True)
    evaluate(generator, list(TASKS), out, batch_size=batch_size, limit=limit, data=data, progress=False)
    return {t: [json.loads(line)["prediction"] for line in (out / f"samples_{t}.jsonl").open()] for t in TASKS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an exported checkpoint (default: a tiny random LLaVA)")
    parser.add_argument("--world", help="shapes world folder (default: build a small one)")
    parser.add_argument("--workdir", default="/tmp/vlmforge-bench-lmms")
    parser.add_argument("--per-task", type=int, default=32, help="questions per task (4 tasks)")
    parser.add_argument("--batch-size", type=int, default=32, help="vlmforge's batch size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from vlmforge.eval.generator import load_generator
    from vlmforge.eval.lmms import write_lmms_task
    from vlmforge.eval.tasks import resolve
    from vlmforge.testing.lmms import apply_shims

    shims = apply_shims()
    model, world = _inputs(args)
    workdir = Path(args.workdir)
    data = {"world": str(world), "world_split": "test"}
    folder = workdir / "lmms_tasks"
    names = [write_lmms_task(t, data, folder, limit=args.per_task) for t in resolve(TASKS)]
    batched, single = load_generator(model, batch_size=args.batch_size), load_generator(model, batch_size=1)
    from lmms_eval.tasks import TaskManager

    lm = _lmms_model(model)
    module = lm._model
    # Indexing lmms-eval's task folders is setup, like loading the model: done once, outside the timed rounds.
    task_manager = TaskManager(include_path=str(folder), model_name="llava_hf", verbosity="WARNING")
    arms = {
        "vlmforge eval, batched": lambda: _vlmforge_round(batched, data, args.per_task, args.batch_size, workdir / "b"),
        "vlmforge eval, one at a time": lambda: _vlmforge_round(single, data, args.per_task, 1, workdir / "s"),
        "lmms-eval llava_hf": lambda: dict(
            zip(TASKS, _lmms_round(lm, module, names, task_manager).values(), strict=True)
        ),
    }
    for run in arms.values():  # warm-up: first calls pay one-time costs (imports, allocator, dataset cache)
        run()
    times: dict[str, list[float]] = {name: [] for name in arms}
    answers = {}
    for _ in range(args.rounds):
        for name, run in arms.items():
            start = time.perf_counter()
            answers[name] = [a for t in TASKS for a in run()[t]]
            times[name].append(time.perf_counter() - start)
    report(model, times, answers, args, shims)


def report(model, times: dict[str, list[float]], answers: dict[str, list[str]], args, shims: list[str]) -> None:
    n = len(answers["lmms-eval llava_hf"])
    print(f"model: {model}; {n} questions ({len(TASKS)} tasks); vlmforge batch size {args.batch_size}; "
          f"{args.rounds} rounds; torch threads {torch.get_num_threads()}; lmms-eval stand-ins: {shims or 'none'}")  # fmt: skip
    print("| arm | median seconds | questions/s |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {n / statistics.median(values):.1f} |")
    lmms = times["lmms-eval llava_hf"]
    for name in ("vlmforge eval, batched", "vlmforge eval, one at a time"):
        ratios = [t / v for v, t in zip(times[name], lmms, strict=True)]
        print(f"lmms-eval time / {name}: {statistics.median(ratios):.2f}x (per round: "
              f"{', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
    theirs = [a.strip() for a in answers["lmms-eval llava_hf"]]
    for name in ("vlmforge eval, batched", "vlmforge eval, one at a time"):
        same = sum(a == b for a, b in zip(answers[name], theirs, strict=True))
        print(f"identical greedy answers, {name} vs lmms-eval: {same}/{n}")


if __name__ == "__main__":
    main()
