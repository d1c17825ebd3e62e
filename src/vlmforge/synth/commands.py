"""CLI: ``vlmforge unicorn densify|instruct|embed|transfer`` (text-only data synthesis, one stage each)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmforge.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    from vlmforge.synth.backends import add_backend_args

    parser = subparsers.add_parser(
        "unicorn",
        help="text-only VLM data: captions -> QA records -> caption embeddings (Unicorn)",
        description=(
            "Unicorn pipeline, one stage per subcommand. Every stage writes into its own --out directory with a "
            "manifest.json; densify and instruct resume where an interrupted run stopped."
        ),
    )
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)

    p = stages.add_parser(
        "densify",
        help="stage 1: seed captions -> one detailed, objective paragraph each",
        description="Expand short seed captions into detailed descriptions with an LLM (writes captions.jsonl).",
    )
    p.add_argument("--seeds", type=Path, required=True, help="JSONL with id + caption, or a text file, one per line")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    add_backend_args(p)
    p.set_defaults(handler=_densify, max_new_tokens=512)

    p = stages.add_parser(
        "instruct",
        help="stage 2: captions -> 6-8 QA pairs each, as multi-turn LLaVA records",
        description=(
            "Ask an LLM for QA pairs about each caption (multiple choice, open QA or complex reasoning, chosen per "
            "caption from its id), validate the JSON, and write records.jsonl."
        ),
    )
    p.add_argument("--captions", type=Path, required=True, help="JSONL with id + caption (densify's captions.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--ratios",
        default="multiple_choice=171,open_qa=199,complex_reasoning=100",
        help="task-kind mix (default: the paper's caption counts)",
    )
    p.add_argument("--max-attempts", type=int, default=3, help="generations per caption before rejecting it")
    p.add_argument("--min-pairs", type=int, default=6)
    p.add_argument("--max-pairs", type=int, default=8)
    add_backend_args(p)
    p.set_defaults(handler=_instruct, max_new_tokens=1536)

    p = stages.add_parser(
        "embed",
        help="stage 3a: embed each record's caption into an embedding store",
        description="Embed captions (L2-normalised, float16 safetensors + id list) keyed by record id.",
    )
    p.add_argument("--records", type=Path, required=True, help="JSONL with id + caption (records.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="output directory (the embedding store)")
    p.add_argument("--encoder", help="sentence-transformers or CLIP/SigLIP model dir (default: all-MiniLM-L6-v2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.set_defaults(handler=_embed)

    p = stages.add_parser(
        "transfer",
        help="stage 3b: move caption embeddings toward the image side (mean shift)",
        description=(
            "Transfer an embedding store: none, mean_shift (paper: Norm(u - mean)) or c3 (centre, add Gaussian "
            "noise, re-normalise). Saves the statistics (stats.safetensors/json) next to the new store."
        ),
    )
    p.add_argument("--embeddings", type=Path, required=True, help="embedding store directory (from embed)")
    p.add_argument("--out", type=Path, required=True, help="output directory (a new embedding store)")
    p.add_argument("--method", choices=["none", "mean_shift", "c3"], default="mean_shift")
    p.add_argument("--no-renorm", action="store_true", help="skip the final L2 normalisation (released code's form)")
    p.add_argument("--sigma", type=float, default=0.126, help="c3: noise standard deviation")
    p.add_argument("--seed", type=int, default=0, help="c3: noise seed")
    p.set_defaults(handler=_transfer)

    from vlmforge.synth.unicorn.calibrate_command import add_calibrate_parser

    add_calibrate_parser(stages)


def _generation_kwargs(args: argparse.Namespace) -> dict:
    return {
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
    }


def _densify(args: argparse.Namespace) -> int:
    from vlmforge.synth.backends import backend_config, make_generator
    from vlmforge.synth.unicorn.generate import densify

    m = densify(args.seeds, args.out, make_generator(backend_config(args)), **_generation_kwargs(args))
    _summary(m)
    return 0


def _instruct(args: argparse.Namespace) -> int:
    from vlmforge.synth.backends import backend_config, make_generator
    from vlmforge.synth.unicorn.generate import instruct
    from vlmforge.synth.unicorn.qa import parse_ratios

    try:
        ratios = parse_ratios(args.ratios)
    except ValueError as err:
        raise ConfigError(f"--ratios {args.ratios!r}: expected kind=number,...") from err
    from vlmforge.synth.unicorn.prompts import TASK_KINDS

    if not set(ratios) <= set(TASK_KINDS) or sum(ratios.values()) <= 0:
        raise ConfigError(f"--ratios {args.ratios!r}: kinds are {', '.join(TASK_KINDS)}, weights must be >= 0")
    m = instruct(
        args.captions,
        args.out,
        make_generator(backend_config(args)),
        kind_ratios=ratios,
        max_attempts=args.max_attempts,
        min_pairs=args.min_pairs,
        max_pairs=args.max_pairs,
        **_generation_kwargs(args),
    )
    _summary(m)
    return 0


def _embed(args: argparse.Namespace) -> int:
    from vlmforge.manifest import file_fingerprint
    from vlmforge.synth.jobs import Manifest
    from vlmforge.synth.unicorn.embed import embed_records

    manifest = Manifest(args.out, "unicorn.embed")
    info = embed_records(args.records, args.out, encoder=args.encoder, batch_size=args.batch_size, device=args.device)
    _summary(manifest.write(inputs=[file_fingerprint(args.records)], **info))
    return 0


def _transfer(args: argparse.Namespace) -> int:
    from vlmforge.data.embedding_store import TENSOR_FILE
    from vlmforge.manifest import file_fingerprint
    from vlmforge.synth.jobs import Manifest
    from vlmforge.synth.unicorn.transfer import transfer_store

    manifest = Manifest(args.out, "unicorn.transfer")
    info = transfer_store(
        args.embeddings, args.out, args.method, renorm=not args.no_renorm, sigma=args.sigma, seed=args.seed
    )
    _summary(manifest.write(inputs=[file_fingerprint(args.embeddings / TENSOR_FILE)], **info))
    return 0


def _summary(manifest: dict) -> None:
    counts = manifest.get("counts") or {k: manifest[k] for k in ("n", "dim") if k in manifest}
    print(f"{manifest['stage']}: {counts}; rejections: {manifest.get('rejections', {})}")
