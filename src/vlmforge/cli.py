"""The `vlmforge` command: one subcommand per stage.

Each stage lives in its own package and exposes ``register(subparsers)`` in a ``commands`` module; this file only
collects them. Stage modules import torch and friends inside their handlers, so ``vlmforge --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vlmforge.errors import VlmforgeError

VERBOSE_HELP = (
    "also show the libraries' own output: transformers' load reports and bars, the Trainer's raw log lines, "
    "the server's access log (default: progress bars and one-line summaries)"
)

# Order is the order shown in --help: the pipeline, then the tools around it.
COMMAND_MODULES = [
    "vlmforge.shapes.world.commands",
    "vlmforge.shapes.foundation.commands",
    "vlmforge.train.commands",
    "vlmforge.train.unified_commands",
    "vlmforge.synth.commands",
    "vlmforge.synth.genixer.commands",
    "vlmforge.eval.commands",
    "vlmforge.models.commands",
    "vlmforge.chat",
    "vlmforge.serve.commands",
    "vlmforge.shapes.lab.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmforge",
        description=(
            "Build small vision-language models from synthetic data: synthesize -> filter -> train -> "
            "evaluate -> serve. Start with `vlmforge demo --out runs/lab`."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for command in subparsers.choices.values():
        # Accepted after the command too; SUPPRESS keeps a subcommand's default from undoing `vlmforge -v CMD`.
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from vlmforge.console import configure

    configure(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except VlmforgeError as err:
        print(f"vlmforge {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
