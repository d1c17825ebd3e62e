"""CLI: `vlmforge eval`, `vlmforge eval-suite`, `vlmforge eval-text`."""

from __future__ import annotations

import argparse
import json
import sys

from vlmforge.data.records import ON_ERROR_CHOICES
from vlmforge.errors import ConfigError
from vlmforge.eval.types import SCORING_MODES


def parse_data(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"--data expects KEY=PATH, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def parse_fields(items: list[str] | None) -> list[str]:
    """``--group-by a,b --group-by c`` -> ["a", "b", "c"]."""
    return list(dict.fromkeys(f.strip() for item in items or [] for f in item.split(",") if f.strip()))


def _print_summary(results: dict) -> None:
    for name, task in results.get("tasks", {}).items():
        m = task["metrics"].get(task["primary"], {})
        value = "n/a" if m.get("value") is None else f"{m['value']:.4g}"
        chance = "" if task.get("chance") is None else f" (chance {task['chance']:.3g})"
        skipped, cut = (task.get("rejections") or {}).get("total", 0), task.get("cut_to_context", 0)
        context = f"  ({skipped} skipped, {cut} cut to the model's context)" if skipped or cut else ""
        print(f"{name:20s} {task['primary']:>12s} = {value}{chance}  n={task['n_questions']}{context}")


def _list_tasks() -> int:
    from vlmforge.eval.tasks import GROUPS, TASKS

    for name, task in sorted(TASKS.items()):
        keys = [f"{k}=PATH" for k in task.data_keys] + [f"{k}=VALUE" for k in task.option_keys]
        print(f"{name:16s} {task.description}\n{'':16s} data: {', '.join(keys)}")
    for name, members in GROUPS.items():
        print(f"{name:16s} group: {', '.join(members)}")
    return 0


def _export_lmms(tasks: list, data: dict[str, str], folder: str, limit: int | None) -> int:
    from vlmforge.eval.lmms import write_lmms_task

    names = ",".join(write_lmms_task(task, data, folder, limit=limit) for task in tasks)
    print(f"wrote lmms-eval task(s) {names} to {folder}; evaluate a model on them with\n  lmms-eval --model llava_hf "
          f"--model_args pretrained=MODEL,device=cpu,device_map=cpu --tasks {names} --include_path {folder} "
          "--batch_size 1 --log_samples --output_path OUT")  # fmt: skip
    return 0


def run_eval(args: argparse.Namespace) -> int:
    if args.list_tasks:
        return _list_tasks()
    if not args.tasks or not (args.export_lmms or (args.model and args.out)):
        raise ConfigError("eval needs --model DIR, --tasks T1,T2 and --out DIR (or --list-tasks, or --tasks with "
                          "--export-lmms DIR)")  # fmt: skip
    from vlmforge.eval.runner import evaluate
    from vlmforge.eval.tasks import check_data_keys, resolve

    # Fail on a misspelt task or --data key before loading the model.
    tasks = resolve([t for t in args.tasks.split(",") if t.strip()])
    data = parse_data(args.data)
    check_data_keys(tasks, data)
    if args.export_lmms:
        return _export_lmms(tasks, data, args.export_lmms, args.limit)
    from vlmforge.eval.generator import load_generator
    from vlmforge.runtime import run_name

    results = evaluate(
        load_generator(args.model), tasks, args.out, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, limit=args.limit, data=data,
        model={"name": args.name or run_name(args.model), "path": args.model}, force=args.force,
        scoring=args.scoring, group_by=parse_fields(args.group_by), on_error=args.on_error,
    )  # fmt: skip
    _print_summary(results)
    return 0


def run_suite_cmd(args: argparse.Namespace) -> int:
    from vlmforge.eval.suite import load_suite, run_suite

    spec = load_suite(args.experiment)
    if args.scoring:
        spec["scoring"] = args.scoring
    runs = run_suite(spec, force=args.force)
    for name, results in runs.items():
        print(f"== {name}")
        _print_summary(results)
    print(f"wrote {spec['out']}/comparison.md, comparison.png, comparison.json")
    return 0


def run_text(args: argparse.Namespace) -> int:
    from vlmforge.eval.textonly import MISSING, evaluate_text, lm_eval_available

    if not lm_eval_available():
        print(f"vlmforge eval-text: skipped: {MISSING}", file=sys.stderr)
        return 0 if args.skip_missing else 1
    out = evaluate_text(args.lm, args.tasks.split(","), include_path=args.include_path, limit=args.limit)
    print(json.dumps(out["results"], indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a saved model on benchmarks (shapes world, MME, POPE, GQA, VQAv2, ...)",
        description=(
            "Run greedy generation on each task's questions, score the answers the way the benchmark's "
            "reference scripts do, and write results.json, report.md (+ plot) and samples_<task>.jsonl to --out. "
            "Rerunning with the same --out resumes: finished predictions are reused, but only for the same model "
            "(its folder's files) and task settings, recorded in OUT/inputs.json; another model or other settings "
            "stop with the difference named (--force starts over, or choose a new --out). Works under "
            "`accelerate launch` (each process takes a share of the questions). List tasks with --list-tasks."
        ),
    )  # fmt: skip
    p.add_argument("--model", help="saved model folder (e.g. the output of `vlmforge train`)")
    p.add_argument("--tasks", help="comma-separated task names or groups, e.g. shapes or mme,pope")
    p.add_argument("--out", help="output folder (created; reused to resume the same evaluation)")
    p.add_argument("--force", action="store_true",
                   help="delete the predictions and results in --out first and evaluate from scratch")  # fmt: skip
    p.add_argument("--name", help="model name shown in reports (default: the run's name, e.g. RUN for RUN/STAGE/final)")
    p.add_argument("--batch-size", type=int, default=8, help="questions per generation batch (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override each task's answer length limit")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions of each task (smoke tests)")
    p.add_argument("--data", action="append", metavar="KEY=PATH",
                   help="where a task's files are, e.g. --data world=runs/lab/world --data mme=MME_Benchmark; "
                        "repeatable; --list-tasks shows each task's keys")  # fmt: skip
    p.add_argument("--scoring", choices=SCORING_MODES, default="reference",
                   help="reference (default): parse answers exactly as each benchmark's reference harness does, "
                        "quirks included; robust: with the references' plain bugs fixed (docs/evaluation.md lists "
                        "each rule). Rescores saved predictions without generating again")  # fmt: skip
    p.add_argument("--group-by", action="append", metavar="FIELD",
                   help="also report each task's headline metric per value of this sample field (a record field "
                        "of the jsonl task, or type/subtask/split); comma-separated or repeatable")  # fmt: skip
    p.add_argument("--on-error", choices=ON_ERROR_CHOICES, default="raise",
                   help="raise (default): stop, naming the question, when a prompt leaves no room for an answer in "
                        "the model's context; skip: leave such questions out of the scores and count them in "
                        "results.json")  # fmt: skip
    p.add_argument("--list-tasks", action="store_true", help="list the known tasks and their data keys, then exit")
    p.add_argument("--export-lmms", metavar="DIR",
                   help="write the tasks' questions (the first --limit) as lmms-eval local tasks into DIR and exit, "
                        "to run lmms-eval on the same questions (no --model needed)")  # fmt: skip
    p.set_defaults(handler=run_eval)

    s = subparsers.add_parser(
        "eval-suite", help="evaluate several models on the same tasks and compare them",
        description="Read an experiment YAML (models, tasks, data; see docs/evaluation.md), evaluate every model "
        "and write one comparison table and plot. A rerun reuses each model's predictions only if made by the same "
        "model with the same task settings, as `vlmforge eval` does.",
    )  # fmt: skip
    s.add_argument("experiment", help="experiment YAML file")
    s.add_argument("--force", action="store_true",
                   help="evaluate every model from scratch instead of reusing its saved predictions")  # fmt: skip
    s.add_argument(
        "--scoring",
        choices=SCORING_MODES,
        default=None,
        help="reference or robust (as for `vlmforge eval`); default: the YAML's `scoring`, else reference",
    )
    s.set_defaults(handler=run_suite_cmd)

    t = subparsers.add_parser(
        "eval-text", help="text-only benchmarks of the language model via lm-evaluation-harness (optional extra)",
        description="Evaluate a causal LM folder with lm-eval on local tasks. Needs `pip install "
        "'vlmforge[lm-eval]'`; without it the command says so and exits.",
    )  # fmt: skip
    t.add_argument("--lm", required=True, help="causal LM folder (transformers format)")
    t.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    t.add_argument("--include-path", help="folder of local lm-eval task YAMLs")
    t.add_argument("--limit", type=int, default=None, help="only the first N examples per task")
    t.add_argument("--skip-missing", action="store_true", help="exit 0 when lm-eval is not installed")
    t.set_defaults(handler=run_text)
