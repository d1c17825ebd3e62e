"""`vlmforge unified conflict`: Uni-X's modality-conflict analysis on saved unified models, compared layer for layer."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """\
How differently text and multimodal data pull on the weights of the shared layers (Uni-X's analysis).

For each model, gradients are averaged over --batches text batches and --batches multimodal batches; per shared
layer and weight type (q, k, v, o, gate, up, down) their cosine is taken, minus the cosine of two random halves
of all the batches; conflict = -(cosine - baseline). The multimodal samples are the records' first question and
answer with the image as codes, the text samples the same without the image (or --text's records); both train
only the answer, so the label masks match. Every model gets the same batches, and the same layer indices are
compared (default: the layers shared in every model). Writes OUT/conflict.json, OUT/conflict.png and one
OUT/models/NAME.json per model (reused on a rerun with the same inputs). See docs/unix.md.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    unified = subparsers.add_parser("unified", help="unified (Uni-X) model tools: the modality-conflict analysis")
    sub = unified.add_subparsers(dest="unified_command", metavar="SUBCOMMAND")
    unified.set_defaults(handler=lambda args: unified.print_help() or 2)
    c = sub.add_parser(
        "conflict",
        help="gradient conflict between text and multimodal data per shared layer and weight type",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a saved unified model folder, named for the plot (repeatable: e.g. shared=... two_end=...)",
    )
    c.add_argument("--records", required=True, help="LLaVA records with images (.jsonl/.json/.parquet)")
    c.add_argument("--images", help="folder the records' image paths are relative to (default: the records' folder)")
    c.add_argument("--text", help="records for the text side, images ignored (default: --records without images)")
    c.add_argument("--batches", type=int, default=8, help="batches per side (default: %(default)s)")
    c.add_argument("--batch-size", type=int, default=4, help="samples per batch (default: %(default)s)")
    c.add_argument("--layers", help="comma-separated layer indices (default: the layers shared in every model)")
    c.add_argument("--seed", type=int, default=0, help="which records, and the random halves (default: 0)")
    c.add_argument("--device", help="torch device (default: cuda if available)")
    c.add_argument("--out", required=True, help="output folder")
    c.set_defaults(handler=_conflict)  # fmt: skip


def _named_models(specs: list[str]) -> dict[str, Path]:
    from vlmforge.errors import ConfigError

    models: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--model takes NAME=DIR, got '{spec}'")
        if name in models:
            raise ConfigError(f"--model name '{name}' given twice")
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"--model {name}: '{path}' is not a saved model folder (no config.json)")
        models[name] = Path(path)
    return models


def _layers(spec: str | None, shared: dict[str, list[int]]) -> list[int]:
    from vlmforge.errors import ConfigError

    common = sorted(set.intersection(*(set(layers) for layers in shared.values())))
    if spec is None:
        if not common:
            raise ConfigError(f"no layer index is shared in every model ({shared}); the mot arm has none")
        return common
    try:
        layers = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError as err:
        raise ConfigError(f"--layers takes comma-separated integers, got '{spec}'") from err
    for name, own in shared.items():
        if missing := [i for i in layers if i not in own]:
            raise ConfigError(f"--layers: layer(s) {missing} are not shared in model '{name}' (shared: {own})")
    return layers


def _conflict(args: argparse.Namespace) -> int:
    from vlmforge.errors import ConfigError
    from vlmforge.train.conflict_run import ConflictInputs, run_conflict

    if args.batches < 1 or args.batch_size < 1:
        raise ConfigError("--batches and --batch-size must be at least 1")
    inputs = ConflictInputs(args.records, args.images, args.text, args.batches, args.batch_size, args.seed)
    result: dict[str, Any] = run_conflict(
        _named_models(args.model), inputs, Path(args.out), lambda shared: _layers(args.layers, shared), args.device
    )
    for name, summary in result["summary"].items():
        by_kind = ", ".join(f"{kind} {value:+.3f}" for kind, value in summary["by_type"].items())
        print(f"[conflict] {name}: mean {summary['mean']:+.3f} over layers {result['layers']} ({by_kind})")
    print(f"[conflict] -> {Path(args.out) / 'conflict.json'}, {Path(args.out) / 'conflict.png'}")
    return 0
