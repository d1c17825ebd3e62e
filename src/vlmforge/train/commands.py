"""`vlmforge train` and `vlmforge merge-lora`."""

from __future__ import annotations

import argparse

from vlmforge.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a VLM from a YAML recipe, or from your own records with --data (no recipe needed)",
        description=(
            "Run the stages of a recipe in order. Each stage starts from the previous stage's result and writes a "
            "plain LLaVA checkpoint to OUTPUT_DIR/<stage>/final. Each stage folder records the resolved recipe and "
            "its inputs (models, data files) in inputs.json: a rerun skips a finished stage, or resumes an "
            "interrupted one with --resume, only when they are the same, and otherwise stops and names what "
            "changed (--force trains again; --out writes elsewhere). Multi-GPU / multi-node: "
            "`accelerate launch [--config_file ...] -m vlmforge.cli train RECIPE`."
        ),
    )
    train.add_argument(
        "recipe", nargs="?", help="recipe YAML (see recipes/ and docs/recipes.md); or give --data instead (below)"
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set stages.finetune.learning_rate=1e-4 (repeatable)",
    )
    train.add_argument("--out", help="output folder (default: the recipe's output_dir; same as --set output_dir=DIR)")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue each unfinished stage from its last checkpoint (only if made from the same recipe and inputs)",
    )
    train.add_argument(
        "--force",
        "--overwrite",
        dest="force",
        action="store_true",
        help="train every stage again, deleting the checkpoints and results an earlier run left in the output folder",
    )
    train.set_defaults(handler=_train)

    merge = subparsers.add_parser(
        "merge-lora",
        help="fold a LoRA adapter into its base model -> plain LLaVA checkpoint",
        description="Merge a LoRA adapter (from a finetune stage with tune: lora) into its base LLaVA checkpoint.",
    )
    merge.add_argument("--adapter", required=True, help="adapter folder (contains adapter_config.json)")
    merge.add_argument("--out", required=True, help="where to write the merged checkpoint")
    merge.set_defaults(handler=_merge)


def _train(args: argparse.Namespace) -> int:
    from vlmforge.train.recipe import load_recipe
    from vlmforge.train.stage import run_recipe

    if not args.recipe:
        raise ConfigError("train needs a recipe YAML, or --data FILE --vision V --lm L --out DIR (docs/own-data.md)")
    recipe = load_recipe(args.recipe, args.overrides)
    if args.out:
        recipe.output_dir = args.out
    final = run_recipe(recipe, resume=args.resume, force=args.force)
    print(f"final model: {final}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from vlmforge.train.trainable import merge_lora

    print(f"merged model: {merge_lora(args.adapter, args.out)}")
    return 0
