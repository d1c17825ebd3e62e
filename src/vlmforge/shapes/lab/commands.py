"""`vlmforge demo`: the shapes lab."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="the shapes lab: render a world, build tiny foundation models, train + evaluate recipes, write a report",
        description=(
            "Run the embedded shapes lab offline: render the shapes world (train / held-out test images), build or "
            "reuse the tiny foundation models, train the Bunny two-stage recipe over several seeds, evaluate every "
            "model on the held-out images and write OUT/results.json, OUT/report.md and OUT/accuracy.png. "
            "Reruns reuse finished work made from the same inputs; a run or evaluation made from other foundation "
            "models or settings is moved to OUT/stale/ and made again."
        ),
    )
    demo.add_argument("--out", default="runs/lab", help="output folder (default: runs/lab)")
    size = demo.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small, fast version (one seed, small world) for CI")
    size.add_argument(
        "--long",
        action="store_true",
        help="the default lab plus a longer box phase in the foundation LM's reading (4000 steps instead of 500) "
        "that also teaches multiple choice: boxes and option letters need thousands of steps of their own "
        "(a few minutes more; docs/foundation.md)",
    )
    demo.add_argument("--seeds", default=None, help="comma-separated training seeds (default: 0,1,2; quick: 0)")
    demo.add_argument(
        "--foundation", default=None, help="foundation models folder to build or reuse (default: OUT/foundation)"
    )
    demo.add_argument(
        "--recipes",
        default="bunny",
        help="comma-separated lab recipes (default: bunny); 'unicorn' adds the text-only Unicorn models "
        "(transfer none / mean_shift / c3) and their image-trained control, and evaluates the mean_shift models "
        "once more with covariance alignment at test time (row unicorn-mean_shift+cov); 'genixer' runs the Genixer lab "
        "(a generator writes samples for a second world's images, a judge and a box filter select them, students "
        "train on a labeled fifth plus each selection; docs/genixer.md); 'unix' adds the unified (Uni-X) model's "
        "shared and two_end arms (docs/unix.md), e.g. --recipes bunny,unicorn",
    )
    demo.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the lab's recipes (all of them), e.g. --set stages.finetune.epochs=3 "
        "(repeatable). Values may use ${world}, ${foundation} and ${records} (the folder of the recipe's training "
        "records), e.g. --set 'stages.finetune.data.path=${records}/instruct.jsonl'",
    )
    demo.add_argument(
        "--foundation-set",
        dest="foundation_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a value of the foundation models' spec, as `vlmforge foundation --set` does (repeatable), "
        "e.g. --foundation-set vision.dense_weight=0.5; a foundation folder built with other values is rebuilt",
    )
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from vlmforge.shapes.foundation.build import cli_settings
    from vlmforge.shapes.lab.config import LabConfig
    from vlmforge.shapes.lab.run import expand_recipes, run_lab

    out = Path(args.out)
    config = LabConfig.quick(out) if args.quick else LabConfig.long(out) if args.long else LabConfig(out=out)
    if args.seeds:
        config.seeds = tuple(int(s) for s in args.seeds.split(","))
    config.recipes = expand_recipes(args.recipes)
    if args.foundation:
        config.foundation_dir = Path(args.foundation)
    config.recipe_overrides = (*config.recipe_overrides, *args.overrides)
    config.foundation_overrides = {
        **config.foundation_overrides,
        **cli_settings(args.foundation_settings, "--foundation-set"),
    }
    results = run_lab(config)
    print((out / "report.md").read_text())
    print(f"total wall time: {results['timings_seconds']['total']:.0f} s — results in {out}")
    return 0
