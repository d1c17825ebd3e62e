"""The ``filter`` and ``select`` subcommands of ``vlmforge genixer``."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlmforge.errors import ConfigError


def add_filter_parser(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "filter",
        help="drop grounded samples with tiny boxes or a crop that does not match its expression",
        description=(
            "Reject every record with a box whose shorter side is under --min-box (pixels as '50px', or a fraction "
            "of the image as '0.05'). With --scorer (any CLIP/SigLIP model folder or hub id), crop each REC/REG "
            "box and keep the record when the cosine between crop and expression reaches the threshold: give "
            "--threshold, or --calibrate LABELED to set it on labeled REC/REG records so that --recall of them "
            "pass. Writes kept.jsonl and rejected.jsonl."
        ),
    )
    p.add_argument("--records", type=Path, required=True, help="records with 'boxes' (parse's or judge's output)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--image-folder", type=Path, help="where record images live (default: the folder the previous stage recorded)"
    )
    p.add_argument("--min-box", default="0", help="minimum box side: '50px' or a fraction such as '0.05'")
    p.add_argument("--scorer", help="CLIP/SigLIP model folder or hub id (omit: size filter only)")
    p.add_argument("--threshold", type=float, help="minimum cosine to keep a REC/REG record")
    p.add_argument("--calibrate", type=Path, metavar="LABELED", help="labeled records to calibrate the threshold on")
    p.add_argument("--labeled-image-folder", type=Path, help="where the labeled records' images live")
    p.add_argument("--recall", type=float, default=0.9, help="share of labeled pairs the threshold keeps")
    p.add_argument("--device", default=None)
    p.set_defaults(handler=_filter)


def add_select_parser(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "select",
        help="choose judged samples by score band, top-k or at random, mixed with labeled records",
        description=(
            "Choose which judged records to train on: --band LOW:HIGH (the paper found the medium band 0.5:0.7 "
            "helps most), --top-k K, or --random N. --n cuts a band to N records (seeded), so bands compare at "
            "equal size; --random with the same N is their control. --labeled puts the labeled records first. "
            "Every record keeps its provenance, with 'source' and the selection rule added. Writes train.jsonl."
        ),
    )
    p.add_argument("--records", type=Path, required=True, help="judge's judged.jsonl (records with 'score')")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument("--band", help="LOW:HIGH score band, e.g. 0.5:0.7")
    rule.add_argument("--top-k", type=int, help="the K highest scores")
    rule.add_argument("--random", type=int, dest="random_n", metavar="N", help="N records at random")
    p.add_argument("--n", type=int, help="with --band: draw exactly N records from the band")
    p.add_argument("--labeled", type=Path, help="labeled records to mix in")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_select)


def _filter(args: argparse.Namespace) -> int:
    from vlmforge.synth.genixer.boxfilter import ClipScorer, parse_min_size
    from vlmforge.synth.genixer.filter_stage import calibrate, filter_records

    if (args.threshold is not None or args.calibrate) and not args.scorer:
        raise ConfigError("--threshold and --calibrate need --scorer")
    if args.threshold is not None and args.calibrate:
        raise ConfigError("give --threshold or --calibrate, not both")
    scorer = ClipScorer(args.scorer, device=args.device) if args.scorer else None
    calibration = None
    if args.calibrate:
        folder = args.labeled_image_folder or args.calibrate.parent
        calibration = calibrate(scorer, args.calibrate, args.recall, folder)
    m = filter_records(
        args.records,
        args.out,
        min_size=parse_min_size(args.min_box),
        scorer=scorer,
        threshold=args.threshold,
        calibration=calibration,
        image_folder=args.image_folder,
    )
    return summary(m)


def _select(args: argparse.Namespace) -> int:
    from vlmforge.synth.genixer.stages import select_stage

    if args.n is not None and args.band is None:
        raise ConfigError("--n goes with --band (for --top-k and --random the number is already given)")
    m = select_stage(
        args.records,
        args.out,
        band=args.band,
        top_k=args.top_k,
        random_n=args.random_n,
        n=args.n,
        labeled=args.labeled,
        seed=args.seed,
    )
    return summary(m)


def summary(manifest: dict) -> int:
    """One line per stage: what it wrote and what it rejected, by reason."""
    print(f"{manifest['stage']}: {manifest.get('counts')}; rejections: {manifest.get('rejections', {})}")
    return 0
