"""The lab's mean_shift models once more, with covariance alignment at test time (an extension beyond the paper).

The paper centres image embeddings at test time (first moment). The lab evaluates each trained mean_shift model
that way (``unicorn-mean_shift``) and, from the same weights, a copy calibrated on the same images with
``--match-covariance`` (``vlmforge.models.embedding_vlm.alignment``), reported as its own row. Nothing is retrained, so
the difference between the two rows is the test-time alignment alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ALIGNED = "unicorn-mean_shift+cov"
ALIGNED_DIR = "final-covariance"  # next to the run's `final/`


def evaluate_aligned(
    config: Any,
    shift_runs: Sequence[Mapping[str, Any]],
    world_root: Path,
    store: Path,
    calibration_dir: Path,
    calibration_images: int,
) -> list[dict[str, Any]]:
    """Per mean_shift run: calibrate a copy of its final model with covariance alignment onto ``store`` and
    evaluate it on the held-out test images. The copy is made again every time (a few seconds), as the mean_shift
    model is calibrated again before each evaluation: a kept copy could predate a retrained ``final``."""
    from vlmforge.models.embedding_vlm.calibrate import calibrate_checkpoint
    from vlmforge.shapes.lab.recipe_runs import evaluate_on_test

    runs = []
    for run in shift_runs:
        final = Path(run["model"])
        aligned = final.parent / ALIGNED_DIR
        calibrate_checkpoint(final, calibration_dir, n=calibration_images, out_dir=aligned, text_store=store)
        seed = run["seed"]
        runs.append(evaluate_on_test(config, f"{ALIGNED}-seed{seed}", aligned, world_root, seed, run["train_seconds"]))
    return runs


def aligned_image_side(train_images: Any, model_dir: str | Path) -> Any:
    """The train images as an aligned model sees them: its stored mean and matrix applied to ``train_images``
    (normalised encoder embeddings)."""
    from transformers import AutoModelForImageTextToText

    import vlmforge.models  # noqa: F401  (registers the embedding VLM with the Auto classes)
    from vlmforge.models.embedding_vlm.alignment import align

    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    return align(train_images, model.image_mean, model.image_align)
