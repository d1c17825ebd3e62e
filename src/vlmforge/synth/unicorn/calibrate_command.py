"""``vlmforge unicorn calibrate``: store the image mean (test-time centring) in an embedding-input VLM checkpoint,
and optionally the covariance alignment (``--match-covariance``).

``add_calibrate_parser(stages)`` adds the subcommand to the ``vlmforge unicorn`` parser.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_calibrate_parser(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "calibrate",
        help="after training: store the image mean in an embedding-input VLM, for test-time centring",
        description=(
            "Embed a set of real images with the model's own image encoder and save the mean of the normalised "
            "embeddings into the checkpoint. At inference every image embedding is then centred with it "
            "(v = Norm(Norm(e) - mean)), so real images land where the mean-shifted caption embeddings were "
            "during text-only training. Use unlabelled images like the ones the model will see (the paper uses "
            "the test images themselves)."
        ),
    )
    p.add_argument("--model", type=Path, required=True, help="checkpoint folder of an embedding-input VLM")
    p.add_argument(
        "--images",
        type=Path,
        required=True,
        help="a folder of images, or a records file (JSONL/JSON/Parquet) whose 'image' fields are used",
    )
    p.add_argument("--n", type=int, default=256, help="use the first N images (default: 256)")
    p.add_argument("--out", type=Path, help="save the calibrated model here instead of overwriting --model")
    p.add_argument(
        "--match-covariance",
        type=Path,
        metavar="STORE",
        help="also match the spread, not only the mean (an extension beyond the paper): give the embedding store "
        "the model was trained on (e.g. the output of 'vlmforge unicorn transfer'); the centred image embeddings "
        "are then mapped onto its covariance (CORAL). See docs/unicorn.md",
    )
    p.add_argument(
        "--shrinkage",
        type=float,
        # Resolved in run_calibrate: naming the alignment's default here would import torch and transformers
        # for every `vlmforge --help`.
        default=None,
        help="with --match-covariance: pull both covariances toward a scaled identity by this much, needed when "
        "there are fewer images than embedding dimensions (default: the alignment's own, listed in docs/unicorn.md)",
    )
    p.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from vlmforge.errors import ConfigError
    from vlmforge.models.embedding_vlm.alignment import DEFAULT_SHRINKAGE
    from vlmforge.models.embedding_vlm.calibrate import calibrate_checkpoint

    if args.shrinkage is None:
        args.shrinkage = DEFAULT_SHRINKAGE
    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    if not 0.0 <= args.shrinkage <= 1.0:
        raise ConfigError(f"--shrinkage must be between 0 and 1, got {args.shrinkage}")
    summary = calibrate_checkpoint(args.model, args.images, args.n, args.out, args.match_covariance, args.shrinkage)
    print(json.dumps(summary, indent=2))
    return 0
