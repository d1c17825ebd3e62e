"""CLI: `vlmforge probe`, the readout ceiling of a vision tower per question kind (vlmforge.eval.probe)."""

from __future__ import annotations

import argparse
import json

from vlmforge.errors import ConfigError
from vlmforge.eval.commands import parse_fields


def run_probe_cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vlmforge.data.kinds import kind_field
    from vlmforge.data.records import load_valid_records
    from vlmforge.data.split import split_by_image
    from vlmforge.eval.probe import report_lines, run_probe, with_vlm

    folder = Path(args.image_folder) if args.image_folder else Path(args.data).parent
    train = [record for _, record in load_valid_records(args.data, folder)]
    if args.eval_data:
        heldout = [record for _, record in load_valid_records(args.eval_data, folder)]
    else:
        try:
            split = split_by_image(train, args.heldout_fraction, args.seed)
        except ValueError as err:
            raise ConfigError(f"{args.data}: {err}") from err
        train, heldout = split.train, split.heldout
    field = kind_field(train, parse_fields(args.group_by)[0] if args.group_by else None)
    cache = Path(args.out) / "cache" if args.out else None
    result = run_probe(train, heldout, folder, args.vision, field, layer=args.layer, cache=cache, seed=args.seed)
    vlm = json.loads(Path(args.results).read_text()) if args.results else None
    result["kinds"] = with_vlm(result["kinds"], vlm, field)
    about = result["features"]
    print(f"[probe] linear probe per {field} on {about['vision_model']} layer {about['layer']} "
          f"({about['strategy']} tokens, {about['pooling']}): {len(train)} train records, {len(heldout)} held out")  # fmt: skip
    print("\n".join(report_lines(result["kinds"], field)))
    if args.out:
        Path(args.out, "probe.json").write_text(json.dumps(result, indent=2))
        print(f"wrote {Path(args.out) / 'probe.json'}")
    return 0


def _layers(text: str) -> int | list[int]:
    """``-2`` -> -2; ``-3,-2`` -> [-3, -2]."""
    try:
        layers = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a layer index or indices separated by commas, got {text!r}"
        ) from None
    return layers[0] if len(layers) == 1 else layers


def register(subparsers: argparse._SubParsersAction) -> None:
    pr = subparsers.add_parser(
        "probe", help="readout ceiling: a linear probe per question kind on the frozen vision features",
        description=(
            "How much of each question kind's answer a linear classifier reads off the vision tower's features "
            "(the layer and tokens a LLaVA's projector receives, averaged within each cell of a 3x3 grid over the image, "
            "so that where a thing is stays in them), trained on the training "
            "records and scored on held-out ones. A VLM built on that tower should come close to it; with "
            "--results (from `vlmforge eval --tasks jsonl --group-by FIELD`) the VLM's accuracy per kind is "
            "shown as a fraction of the probe's. A kind is probed only when its answer depends on the image alone "
            "(one answer per image); for the others the command says why not. See docs/own-data.md."
        ),
    )  # fmt: skip
    pr.add_argument("--data", required=True, help="training records (LLaVA JSONL/JSON/Parquet)")
    pr.add_argument("--image-folder", help="folder the records' image paths are relative to (default: the file's)")
    pr.add_argument("--vision", required=True, help="vision model folder or hub id (the VLM's vision tower)")
    pr.add_argument("--group-by", action="append", metavar="FIELD",
                    help="the record field that names a question kind (default: task, kind, type or "
                         "question_type when every record has it, else the question text)")  # fmt: skip
    pr.add_argument("--eval-data", help="held-out records (default: a seeded share of the images is held out)")
    pr.add_argument("--heldout-fraction", type=float, default=0.1,
                    help="share of the images held out when there is no --eval-data (default 0.1)")  # fmt: skip
    pr.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the probe (default 0)")
    pr.add_argument("--layer", type=_layers, default=-2,
                    help="vision layer to probe, as a recipe's model.vision_feature_layer: one index, or several "
                         "separated by commas, concatenated per token as LLaVA does (default -2)")  # fmt: skip
    pr.add_argument("--results", help="an evaluation's results.json, to show the VLM's accuracy per kind")
    pr.add_argument("--out", help="folder for probe.json and the feature cache (default: print only)")
    pr.set_defaults(handler=run_probe_cmd)
