"""CLI: ``vlmforge genixer build|generate|parse|judge|filter|select`` — Genixer's stages, one subcommand each.

Training the generator is an ordinary ``vlmforge train`` recipe on ``build``'s output (docs/genixer.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmforge.errors import ConfigError
from vlmforge.synth.genixer.filter_command import add_filter_parser, add_select_parser, summary

DESCRIPTION = """\
Genixer: train a VLM to write instruction data for unlabeled images, then filter what it writes.

  1. build     labeled records -> the generator's training records (image + instruction -> "Question: .. Answer: ..")
  2. (train)   vlmforge train --recipe ... on build's generator.jsonl
  3. generate  the trained generator on a folder of unlabeled images (resumable; shard with --shard I/N)
  4. parse     generated text -> training records; every rejected output counted by reason
  5. judge     score each record with any VLM: p_yes = P(Yes) / (P(Yes) + P(No)), stored as 'score'
  6. filter    drop grounded samples with tiny boxes or a crop that does not match its expression (CLIP/SigLIP)
  7. select    a score band (--band 0.5:0.7), top-k or a random subset, mixed with the labeled records

Every stage writes into its own --out folder: its records as JSONL plus manifest.json (inputs, options, counts,
rejections by reason). See docs/genixer.md.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "genixer",
        help="a VLM as data generator: build, generate, parse, judge, filter, select (Genixer)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    _add_build(stages)
    _add_generate(stages)
    _add_parse(stages)
    _add_judge(stages)
    add_filter_parser(stages)
    add_select_parser(stages)


def _add_build(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "build",
        help="labeled records -> the generator's training records",
        description=(
            "Turn labeled LLaVA/grounding records into generator training records: the human turn is a generic "
            "instruction (one of 58 wordings, drawn per record with --seed), followed in task-specific mode by a "
            "sentence naming the task; the answer is the record's own 'Question: ... Answer: ...' text. Records "
            "whose 'task' is no Genixer task (e.g. caption) are counted and left out. Writes generator.jsonl."
        ),
    )
    p.add_argument("--labeled", type=Path, required=True, help="records (.jsonl/.json/.parquet)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--mode", choices=["specific", "agnostic", "mixed"], default="specific", help="task sentence or not")
    p.add_argument("--agnostic-share", type=float, default=0.5, help="mixed: share without a task sentence")
    p.add_argument("--image-folder", type=Path, help="where record images live (to normalise pixel boxes)")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise", help="skip = count bad records")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_build)


def _add_generate(stages: argparse._SubParsersAction) -> None:
    from vlmforge.synth.backends import add_backend_args

    p = stages.add_parser(
        "generate",
        help="run the generator on a folder of unlabeled images",
        description=(
            "Ask the generator for question/answer text about every image in --images, per task (task-specific) or "
            "letting it choose (--tasks any). Batched, each batch asking one task (its outputs end at similar "
            "lengths), and resumable: rerun the same command after an interruption and it continues without "
            "losing or repeating a request. Run N processes with --shard 0/N ... N-1/N "
            "and separate --out folders; parse reads them all. Writes generated.jsonl (raw text)."
        ),
    )
    p.add_argument("--images", type=Path, required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--tasks", default="all", help="comma-separated Genixer tasks, 'all' (default) or 'any'")
    p.add_argument("--per-image", type=int, default=1, help="requests per image and task")
    p.add_argument("--shard", default="0/1", help="I/N: this process takes every N-th request from the I-th")
    add_backend_args(p)
    p.set_defaults(handler=_generate, temperature=0.2, batch_size=8)


def _add_parse(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "parse",
        help="generated text -> training records, rejections counted by reason",
        description=(
            "Parse each output into question/answer pairs, check them against the task asked (or infer the task "
            "for task-agnostic requests), and write records.jsonl; every other output goes to rejected.jsonl with "
            "its reason (no_question, no_answer, bad_box, box_out_of_range, options_missing, ...)."
        ),
    )
    p.add_argument("--generated", type=Path, nargs="+", required=True, help="generate's generated.jsonl (one or more)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(handler=_parse)


def _add_judge(stages: argparse._SubParsersAction) -> None:
    from vlmforge.synth.backends import add_backend_args

    p = stages.add_parser(
        "judge",
        help="score every record with a judge VLM (p_yes, or the released score)",
        description=(
            "Ask a judge VLM \"Here is a question and answer pair. Is '{Question: q Answer: a}' true for this "
            "image?\" and store its answer's probability on each record as 'score'. p_yes (default) is "
            "P(Yes) / (P(Yes) + P(No)) from one forward pass (local) or the first token's top logprobs (server); "
            "'released' samples an answer and takes the geometric mean of its tokens' probabilities, as the "
            "released code did. Resumable. Writes judged.jsonl."
        ),
    )
    p.add_argument("--records", type=Path, required=True, help="records to judge (parse's records.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--image-folder", type=Path, help="where record images live (default: the folder the previous stage recorded)"
    )
    p.add_argument("--score", choices=["p_yes", "released"], default="p_yes")
    p.add_argument("--top-logprobs", type=int, default=20, help="openai: logprobs asked for the first token")
    p.add_argument("--device", default=None, help="local: cpu, cuda, cuda:1 (default: cuda when present)")
    add_backend_args(p)
    p.set_defaults(handler=_judge, batch_size=16)


def _build(args: argparse.Namespace) -> int:
    from vlmforge.synth.genixer.stages import build_stage

    if not 0.0 <= args.agnostic_share <= 1.0:
        raise ConfigError(f"--agnostic-share must be in [0, 1], got {args.agnostic_share}")
    m = build_stage(
        args.labeled,
        args.out,
        on_error=args.on_error,
        image_folder=args.image_folder,
        seed=args.seed,
        mode=args.mode,
        agnostic_share=args.agnostic_share,
    )
    return summary(m)


def _generate(args: argparse.Namespace) -> int:
    from vlmforge.synth.backends import backend_config
    from vlmforge.synth.genixer.backends import make_vision_generator
    from vlmforge.synth.genixer.generate import generate_folder, parse_shard
    from vlmforge.synth.genixer.tasks import TASKS

    tasks = {"all": list(TASKS), "any": None}.get(args.tasks) or [t.strip() for t in args.tasks.split(",")]
    if args.per_image < 1:
        raise ConfigError(f"--per-image must be at least 1, got {args.per_image}")
    shard = parse_shard(args.shard)
    generator = make_vision_generator(backend_config(args))
    m = generate_folder(
        args.images,
        args.out,
        generator,
        tasks=tasks,
        per_image=args.per_image,
        shard=shard,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    return summary(m)


def _parse(args: argparse.Namespace) -> int:
    from vlmforge.synth.genixer.stages import parse_stage

    return summary(parse_stage(args.generated, args.out))


def _judge(args: argparse.Namespace) -> int:
    from vlmforge.synth.backends import backend_config
    from vlmforge.synth.genixer.judge_stage import judge_records
    from vlmforge.synth.genixer.judges import make_judge

    judge = make_judge({**backend_config(args), "top_logprobs": args.top_logprobs, "device": args.device})
    m = judge_records(
        args.records,
        args.out,
        judge,
        image_folder=args.image_folder,
        score=args.score,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    return summary(m)
