"""`vlmforge train --data ...` (a user's own records, no recipe) and `vlmforge init` (the template to edit).

`vlmforge train`'s parser belongs to vlmforge.train.commands; this module adds the own-data options to it and
routes a call with ``--data`` here, because the own-data run needs training, evaluation and the probe, and the
training package may not import evaluation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmforge.errors import ConfigError

OWN_DATA_HELP = (
    "Or train on your own LLaVA records with no recipe: vlmforge train --data train.jsonl --image-folder DIR "
    "--vision V --lm L --out OUT. It validates the records, holds out a seeded share of the images (or uses "
    "--eval-data), trains stage 1 on captions when the records carry them (else the projector alone on the "
    "conversations), sizes each stage in optimizer steps from the number of records, then reports held-out "
    "accuracy per question kind next to a linear probe's ceiling (docs/own-data.md). --set, --resume, --force "
    "work as with a recipe; --set own_data.KEY=VALUE changes the template's own_data settings."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.choices["train"]
    train.description = f"{train.description} {OWN_DATA_HELP}"
    group = train.add_argument_group("your own records (instead of a recipe)")
    group.add_argument(
        "--data", type=Path, metavar="FILE", help="training records: LLaVA JSONL/JSON/Parquet (docs/records.md)"
    )
    group.add_argument("--image-folder", type=Path, metavar="DIR",
                       help="folder the records' image paths are relative to (default: the records file's folder)")  # fmt: skip
    group.add_argument("--vision", metavar="V", help="vision model folder or hub id (CLIP/SigLIP family)")
    group.add_argument("--lm", metavar="L", help="language model folder or hub id (any causal LM with a tokenizer)")
    group.add_argument("--eval-data", type=Path, metavar="FILE",
                       help="held-out records to report on (default: a seeded share of the images is held out)")  # fmt: skip
    group.add_argument("--template", type=Path, metavar="FILE",
                       help="an edited copy of the own-data template (`vlmforge init FILE`; default: the built-in)")  # fmt: skip
    recipe_handler = train.get_default("handler")
    train.set_defaults(handler=lambda args: _train_own(args) if args.data else recipe_handler(args))

    init = subparsers.add_parser(
        "init", help="write the own-data template (a recipe for your own records) to edit",
        description="Write the template `vlmforge train --data ...` uses to FILE: its own_data settings (held-out "
        "split, question kinds, probe, step schedules) and its two-stage recipe. Edit it and pass it back with "
        "`vlmforge train --data ... --template FILE`.",
    )  # fmt: skip
    init.add_argument("file", type=Path, help="where to write the template (YAML)")
    init.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    init.set_defaults(handler=_init)


def _train_own(args: argparse.Namespace) -> int:
    if args.recipe:
        raise ConfigError("give either a recipe or --data, not both (a recipe names its own data)")
    missing = [flag for flag, value in (("--vision", args.vision), ("--lm", args.lm), ("--out", args.out)) if not value]
    if missing:
        raise ConfigError(f"train --data also needs {', '.join(missing)}")
    from vlmforge.owndata.run import OwnDataJob, run_own_data

    job = OwnDataJob(data=args.data, image_folder=args.image_folder, vision=args.vision, lm=args.lm,
                     out=Path(args.out), eval_data=args.eval_data, template=args.template,
                     overrides=list(args.overrides), resume=args.resume, force=args.force)  # fmt: skip
    run_own_data(job)
    return 0


def _init(args: argparse.Namespace) -> int:
    from vlmforge.owndata.settings import template_text

    if args.file.exists() and not args.force:
        raise ConfigError(f"{args.file} exists; pass --force to overwrite it")
    args.file.parent.mkdir(parents=True, exist_ok=True)
    args.file.write_text(template_text(), encoding="utf-8")
    print(
        f"wrote {args.file}; edit it, then: vlmforge train --data FILE --vision V --lm L --out OUT --template {args.file}"
    )
    return 0
