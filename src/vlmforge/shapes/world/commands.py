"""`vlmforge world`: render the shapes world (images + exact captions, questions and boxes) to a folder."""

from __future__ import annotations

import argparse

from vlmforge.shapes.world.config import DEFAULT_QUESTIONS, GROUNDING_TASKS, WorldConfig


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = WorldConfig()
    p = subparsers.add_parser(
        "world",
        help="render the shapes world: synthetic images with exact captions, questions and boxes",
        description=(
            "Render procedural scenes of coloured shapes on a grid, with exact captions, question/answer pairs "
            "(colour, shape, count, position, yes/no, multiple choice, bounding boxes) as LLaVA records, split "
            "into train and a disjoint test set. The same seed gives byte-identical output. See docs/world.md."
        ),
    )
    p.add_argument("--out", required=True, help="folder to write the world into (created if missing)")
    p.add_argument(
        "--train", type=int, default=defaults.train_size, help="number of train images (default %(default)s)"
    )
    p.add_argument("--test", type=int, default=defaults.test_size, help="number of test images (default %(default)s)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    p.add_argument(
        "--image-size",
        type=int,
        default=defaults.image_size,
        help="image side in pixels (default %(default)s)",
    )
    p.add_argument(
        "--max-objects",
        type=int,
        default=defaults.max_objects,
        help="most objects in one scene (default %(default)s)",
    )
    p.add_argument("--shapes", type=_names, default=defaults.shapes, help="comma-separated subset of shapes to use")
    p.add_argument("--colors", type=_names, default=defaults.colors, help="comma-separated subset of colours to use")
    p.add_argument(
        "--background-noise",
        type=int,
        default=0,
        help="per-pixel background noise amplitude, 0-64 (default 0: flat)",
    )
    p.add_argument(
        "--format",
        choices=["jsonl", "parquet"],
        default="jsonl",
        help="record file format (default %(default)s)",
    )
    p.add_argument(
        "--grounding",
        action="store_true",
        help="also ask the grounding tasks Genixer adds to REC, one question each per image: region description "
        "(reg), pick the region from candidates (pointqa), a yes/no question answered with cited boxes (qcba) "
        "and referential dialogue (ref_dialogue). Off by default, so the default world stays as it is",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a different world already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vlmforge.shapes.world.build import build_world

    config = WorldConfig(
        seed=args.seed,
        train_size=args.train,
        test_size=args.test,
        image_size=args.image_size,
        max_objects=args.max_objects,
        shapes=args.shapes,
        colors=args.colors,
        background_noise=args.background_noise,
        questions={**DEFAULT_QUESTIONS, **({t: 1 for t in GROUNDING_TASKS} if args.grounding else {})},
    )
    paths = build_world(config, args.out, fmt=args.format, progress=not args.quiet, overwrite=args.overwrite)
    counts = paths.info()["counts"]
    for split, c in counts.items():
        print(f"{split}: {c['images']} images, {c['records']['instruct']} questions -> {paths.root / split}")
    print(f"world written to {paths.root} (see {paths.world_json.name})")
    return 0
