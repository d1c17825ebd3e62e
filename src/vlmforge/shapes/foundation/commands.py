"""`vlmforge foundation`: build (or reuse) the tiny foundation models of a shapes world."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "foundation",
        help="train the tiny tokenizer, language model and vision tower on a shapes world (cached)",
        description=(
            "Train the small stand-ins for a hub LM and a SigLIP-style vision tower on a shapes world's train "
            "split: a BPE tokenizer with a chat template; a Qwen2 language model taught to answer the world's "
            "questions from object vectors placed where the image tokens will go (the reading phase, then a box "
            "phase); and a vision tower aligned to the frozen all-MiniLM-L6-v2 caption embeddings (pooled, and "
            "per patch against the phrase of the object in it). Writes OUT/lm, OUT/vision (ordinary Hugging "
            "Face model folders) and OUT/manifest.json, which also records the LM's reading test: its accuracy "
            "per question type on the held-out test scenes. From many seeds the reading phase is slow to learn "
            "to find an object by its shape (colour questions, often existence too); its warm-up then goes on "
            "for up to 800 steps, and a start that still has not learned it is replaced by another seed "
            "(--reader-attempts; docs/foundation.md). A second run with the same world, seed and settings "
            "reuses the saved models; --set changes any other setting of the build."
        ),
    )
    parser.add_argument("--world", required=True, help="shapes-world folder (made by `vlmforge world`)")
    parser.add_argument("--out", required=True, help="output folder for lm/, vision/ and manifest.json")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--lm-steps",
        type=int,
        help="steps of LM pretraining on the world's text before the reading phase (default 0; see docs/foundation.md)",
    )
    parser.add_argument("--vision-epochs", type=int, help="vision-tower training epochs (default: the built-in spec)")
    parser.add_argument(
        "--reader-steps",
        type=int,
        help="steps teaching the LM to answer from object vectors in the image's place; 0 skips it "
        "(default: the built-in spec; see docs/foundation.md)",
    )
    parser.add_argument(
        "--box-steps",
        type=int,
        help="reading steps at the end in which half of each batch are referring expressions answered with a box "
        "(default: the built-in spec, 500; 0 skips them; see docs/foundation.md). Multiple choice joins them "
        "with --set reader.mc_fraction=0.625 --set reader.box_fraction=0.25 (what `vlmforge demo --long` "
        "runs, with 4000 steps: the option letters are learned only after thousands of steps)",
    )
    parser.add_argument(
        "--reader-attempts",
        type=int,
        help="most starts of the reading phase: it starts again from a new seed (and at lr 1e-3) while its answers "
        "to its own train scenes miss the pass marks (colour and shape 0.9, existence 0.8; colour and shape 0.8 "
        "already when its warm-up ends, where a failing start stops), and keeps the best (default: 5; 1 never "
        "restarts)",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change any value of the build's spec (repeatable; applied before the flags above), e.g. --set "
        "vision.dense_weight=0.5 --set reader.restart_lr=2e-3; the keys are the fields of FoundationSpec, "
        "LMSpec (lm.), VisionSpec (vision.) and ReaderSpec (reader.), see docs/foundation.md",
    )
    parser.add_argument("--force", action="store_true", help="retrain even if OUT holds a matching build")
    parser.set_defaults(handler=run_foundation)


def run_foundation(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vlmforge.errors import ConfigError
    from vlmforge.shapes.foundation.build import build_foundation, cli_settings, foundation_spec, read_manifest

    spec = foundation_spec(cli_settings(args.settings, "--set"))
    bounds = (
        ("--lm-steps", args.lm_steps, 0),
        ("--vision-epochs", args.vision_epochs, 1),
        ("--reader-steps", args.reader_steps, 0),
        ("--box-steps", args.box_steps, 0),
        ("--reader-attempts", args.reader_attempts, 1),
    )
    for flag, value, least in bounds:
        if value is not None and value < least:
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
    if args.lm_steps is not None:
        spec.lm = replace(spec.lm, steps=args.lm_steps)
    if args.vision_epochs is not None:
        spec.vision = replace(spec.vision, epochs=args.vision_epochs)
    if args.reader_steps is not None:
        spec.reader = replace(spec.reader, steps=args.reader_steps)
    if args.box_steps is not None:
        spec.reader = replace(spec.reader, box_steps=args.box_steps)
    if args.reader_attempts is not None:
        spec.reader = replace(spec.reader, attempts=args.reader_attempts)
    paths = build_foundation(args.world, args.out, spec, seed=args.seed, force=args.force)
    manifest = read_manifest(paths.root) or {}
    summary = {
        "lm": str(paths.lm),
        "vision": str(paths.vision),
        "reused": paths.reused,
        "lm_final_loss": ((manifest.get("lm") or {}).get("text_pretraining") or {}).get("final_loss"),
        "vision_retrieval": manifest.get("vision", {}).get("retrieval"),
        "wall_seconds": manifest.get("wall_seconds"),
    }
    print(json.dumps(summary, indent=2))
    return 0
