"""The lab's Unicorn comparison: text-only training (transfer none / mean_shift / c3) vs an image-trained control.

All four recipes use the same embedding-input VLM (one pooled 384-d vector per image) and the same training
records; only what fills the vector differs: the MiniLM embedding of the image's detailed caption, transferred
(text-only), or the foundation vision tower's pooled ``image_embeds`` of the real image (control). Every model is
evaluated on the same held-out test images. In the lab the world's exact detailed captions and QA stand in for
the LLM's stage-1/2 output, because no capable LLM is available offline. The mean_shift models are also evaluated
with covariance alignment at test time (an extension beyond the paper; :mod:`vlmforge.shapes.lab.unicorn_aligned`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METHODS = ("none", "mean_shift", "c3")
CONTROL = "unicorn-control"
RECIPE_NAMES = (*(f"unicorn-{m}" for m in METHODS), CONTROL)
RECIPE_FILE = "shapes-unicorn.yaml"
# The image side at inference mirrors the caption side: centred stores are met by centred images, raw text
# embeddings (`none`, the paper's "raw" ablation) by raw normalised images.
CENTRE_IMAGES = {"none": False, "mean_shift": True, "c3": True}
CALIBRATION_IMAGES = 256  # first N *train* images (sorted by name); test images are never used to calibrate
PARITY = 0.9  # "reaches" = text-only accuracy >= 90% of the image-trained control's
# "not carried" = the control stays within 0.1 of chance or of the question-only baseline (whichever is higher):
# beating chance by answering from the question's wording is not image use.
NEAR_CHANCE = 0.1
STAND_IN_NOTE = (
    "In this lab the world's exact detailed captions and question-answer records stand in for the LLM's "
    "stage-1 (dense caption) and stage-2 (QA) output: no capable LLM is available offline, so the text-only data "
    "here is cleaner than an LLM would write."
)
# the probe attribute (vlmforge.shapes.lab.transfer_probe) that holds what a question type needs: colour, shape and
# existence questions bind a colour to a shape ("the star" -> its colour; "a red star?")
PROBE_FOR_QUESTION = {"color": "objects", "shape": "objects", "exist": "objects", "count": "count",
                      "position": "positions"}  # fmt: skip
WHY_NOT_CARRIED = {
    "rec": "a box needs the object's coordinates, but one pooled vector summarises the whole scene (and the "
    "caption names a position only as one of nine grid cells)",
    "position": "where each object is, is a relation between several objects and the grid; pooling into one "
    "vector keeps mostly which objects are present",
    "mc": "the options mix several attributes of several objects, more than one pooled vector keeps",
}


def prepare_stores(world_root: Path, work: Path) -> dict[str, Any]:
    """Embed the train captions once and write one transferred store per method (reused when present); the
    seeds of a method share its store. Returns the paths and the mean norm of every store (centring check)."""
    from vlmforge.data.embedding_store import EmbeddingStore
    from vlmforge.models.embedding_vlm.transfer import STATS_JSON, compute_stats
    from vlmforge.synth.unicorn.transfer import transfer_store
    from vlmforge.train.embedding_data import embed_world_captions

    text = work / "text"
    if not (text / "embeddings" / "ids.json").is_file() or not (text / "instruct.jsonl").is_file():
        embed_world_captions(world_root, text, field="detailed_caption")
    stores, mean_norms = {}, {}
    for method in METHODS:
        stores[method] = work / "stores" / method
        if not (stores[method] / STATS_JSON).is_file():
            transfer_store(text / "embeddings", stores[method], method)
        mean_norms[method] = float(compute_stats(EmbeddingStore.open(stores[method]).array).mean.norm())
    return {"records": text, "raw": text / "embeddings", "stores": stores, "store_mean_norm": mean_norms}


def _image_embeddings(vision_dir: Path, paths: Sequence[Path]):
    """The vision tower's pooled projection (``image_embeds``) of each image, [N, D] float32 (not normalised)."""
    from transformers import AutoImageProcessor

    from vlmforge.data.images import load_image
    from vlmforge.models.embedding_vlm.assemble import load_image_encoder
    from vlmforge.models.embedding_vlm.modeling import encode_images

    # the same encoder (tower + projection) the embedding VLM assembles from this folder
    model = load_image_encoder(str(vision_dir)).eval()
    processor = AutoImageProcessor.from_pretrained(vision_dir)
    return encode_images(model, processor, [load_image(p, str(p)) for p in paths], batch_size=256)


def _scene_images(world_root: Path, split: str) -> dict[str, Path]:
    from vlmforge.data.records import read_records

    image_of: dict[str, Path] = {}
    for _, record in read_records(world_root / split / "captions.jsonl"):
        image_of.setdefault(record.get("scene_id", record["id"]), world_root / record["image"])
    return image_of


@dataclass
class ImageSide:
    """The world's train and test images encoded once, as the embedding VLM sees them at inference: normalised
    (``none`` and the control) or normalised, centred with the calibration mean and renormalised."""

    train_ids: list[str]
    train: Any
    test_ids: list[str]
    test: Any
    image_mean: Any
    calibration_images: int

    def seen_by(self, method: str | None, split: str):
        import torch.nn.functional as F

        images = self.train if split == "train" else self.test
        return F.normalize(images - self.image_mean, dim=-1) if method and CENTRE_IMAGES[method] else images


def encode_image_side(world_root: Path, vision_dir: Path, train_ids: Sequence[str]) -> ImageSide:
    """Encode the train images (in ``train_ids`` order: the caption store's) and every test image; the centring
    mean comes from the calibration images, the first train images by name."""
    import torch.nn.functional as F

    from vlmforge.models.embedding_vlm.calibrate import calibration_image_paths
    from vlmforge.models.embedding_vlm.transfer import compute_stats

    train_of, test_of = _scene_images(world_root, "train"), _scene_images(world_root, "test")
    paths = [train_of[i] for i in train_ids]
    train = F.normalize(_image_embeddings(vision_dir, paths), dim=-1)
    test = F.normalize(_image_embeddings(vision_dir, list(test_of.values())), dim=-1)
    calibration = calibration_image_paths(world_root / "images" / "train", CALIBRATION_IMAGES)
    index = {p.resolve(): i for i, p in enumerate(paths)}
    image_mean = compute_stats(train[[index[p.resolve()] for p in calibration]]).mean
    return ImageSide(list(train_ids), train, list(test_of), test, image_mean, len(calibration))


def caption_vectors(prepared: Mapping[str, Any], ids: Sequence[str]) -> dict[str, Any]:
    """The train captions' vectors in ``ids`` order, read once: ``"raw"`` (before transfer) and each method's
    transferred store."""
    from vlmforge.data.embedding_store import EmbeddingStore

    stores = {"raw": prepared["raw"], **prepared["stores"]}
    return {name: EmbeddingStore.open(folder).get_many(ids) for name, folder in stores.items()}


def paired_cosine(vectors: Any, images: Any) -> float:
    """Mean cosine of row i of ``vectors`` with row i of ``images`` (already as the model sees them)."""
    import torch.nn.functional as F

    return float((F.normalize(vectors.float(), dim=-1) * images).sum(-1).mean())


def modality_gap(side: ImageSide, captions: Mapping[str, Any]) -> dict[str, Any]:
    """Mean paired cosine between each train image's caption embedding and its image embedding, before (both
    only normalised) and after transfer (the transferred caption vector vs the image as the model trained on
    that store sees it at inference). ``captions``: :func:`caption_vectors` in ``side.train_ids`` order."""
    before = paired_cosine(captions["raw"], side.train)
    after = {m: paired_cosine(v, side.seen_by(m, "train")) for m, v in captions.items() if m != "raw"}
    return {"pairs": len(side.train_ids), "calibration_images": side.calibration_images, "before": before,
            "after": after}  # fmt: skip


def embedding_probe(world_root: Path, side: ImageSide, captions: Mapping[str, Any]) -> dict[str, Any]:
    """The cross-modal transfer probe (:mod:`vlmforge.shapes.lab.transfer_probe`) for the control's real image vectors
    and each method's transferred caption vectors (:func:`caption_vectors`), all scored on the real test images."""
    from vlmforge.shapes.foundation.corpus import read_scenes
    from vlmforge.shapes.lab.transfer_probe import SCENE_FIELDS, label_vocabulary, scene_labels, transfer_probe

    train_scenes = read_scenes(world_root, "train", required=SCENE_FIELDS)
    vocab = label_vocabulary(train_scenes)
    train_labels = scene_labels(train_scenes, side.train_ids, vocab)
    test_labels = scene_labels(read_scenes(world_root, "test", required=SCENE_FIELDS), side.test_ids, vocab)
    train = {"image": side.train}
    test = {"image": side.seen_by(None, "test")}
    for method, vectors in captions.items():
        if method != "raw":
            train[method], test[method] = vectors, side.seen_by(method, "test")
    return transfer_probe(train, test, train_labels, test_labels)


def run_unicorn(
    config: Any,
    world_root: Path,
    foundation_root: Path,
    names: Sequence[str],
    variables: Mapping[str, str],
    question_only: Mapping[str, float] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and evaluate the requested Unicorn recipes over ``config.seeds`` (``variables``: the lab's recipe
    variables; the text-only recipes get their own ``records`` and ``embeddings``); returns (per-recipe results in
    the lab's shape, the Unicorn section: stores, modality gap, probe, statements)."""
    from vlmforge.data.embedding_store import EmbeddingStore
    from vlmforge.models.embedding_vlm.calibrate import calibrate_checkpoint
    from vlmforge.shapes.lab.recipe_runs import shipped_recipe, summarize, train_and_evaluate
    from vlmforge.shapes.lab.unicorn_aligned import ALIGNED, aligned_image_side, evaluate_aligned

    work = Path(config.out) / "unicorn"
    prepared = prepare_stores(world_root, work)
    calibration_dir = world_root / "images" / "train"
    per_recipe: dict[str, Any] = {}
    for name in names:
        method = name.removeprefix("unicorn-")
        if name == CONTROL:  # real images through the same encoder; not calibrated (it trains on raw embeddings)
            recipe_variables = dict(variables)
            overrides: tuple[str, ...] = (
                "stages.pretrain.data.embeddings=null",
                "stages.finetune.data.embeddings=null",
            )
            before_eval = None
        else:
            recipe_variables = {
                **variables,
                "records": str(prepared["records"]),
                "embeddings": str(prepared["stores"][method]),
            }
            overrides = ()
            before_eval = (
                (lambda final: calibrate_checkpoint(final, calibration_dir, n=CALIBRATION_IMAGES))
                if CENTRE_IMAGES[method] else None
            )  # fmt: skip
        runs = [
            train_and_evaluate(
                config, name, shipped_recipe(RECIPE_FILE), seed, world_root, recipe_variables, overrides, before_eval
            )
            for seed in config.seeds
        ]
        per_recipe[name] = {"runs": runs, "summary": summarize(runs, dict(question_only or {}))}
    shift_runs = per_recipe.get("unicorn-mean_shift", {}).get("runs")
    if shift_runs:  # the same models once more, aligned at test time (an extension; unicorn_aligned.py)
        runs = evaluate_aligned(config, shift_runs, world_root, prepared["stores"]["mean_shift"], calibration_dir,
                                CALIBRATION_IMAGES)  # fmt: skip
        per_recipe[ALIGNED] = {"runs": runs, "summary": summarize(runs, dict(question_only or {}))}
    ids = EmbeddingStore.open(prepared["raw"]).ids
    side = encode_image_side(world_root, foundation_root / "vision", ids)
    captions = caption_vectors(prepared, ids)
    gap = modality_gap(side, captions)
    if shift_runs:
        aligned = aligned_image_side(side.train, per_recipe[ALIGNED]["runs"][0]["model"])
        gap["after"][ALIGNED] = paired_cosine(captions["mean_shift"], aligned)
    probe = embedding_probe(world_root, side, captions)
    section = {
        "note": STAND_IN_NOTE,
        "calibration": f"test-time centring: image mean of the first {CALIBRATION_IMAGES} train images "
        "(never test images); applied to the mean_shift and c3 models; `none` and the control see normalised, "
        "uncentred image embeddings",
        "store_mean_norm": prepared["store_mean_norm"],
        "modality_gap": gap,
        "probe": probe,
        "statements": unicorn_statements({n: r["summary"] for n, r in per_recipe.items()}, gap, probe),
    }
    (work / "unicorn.json").write_text(json.dumps(section, indent=2))
    return per_recipe, section


def _beats(a: dict[str, Any], b: dict[str, Any]) -> str:
    diff = a["mean"] - b["mean"]
    if a.get("se") is not None and b.get("se") is not None:
        margin = 2 * (a["se"] ** 2 + b["se"] ** 2) ** 0.5
        return f"{diff:+.3f} ({'more' if abs(diff) > margin else 'not more'} than 2 standard errors)"
    return f"{diff:+.3f} (one seed: no error bar)"


def unicorn_statements(
    summaries: Mapping[str, Mapping[str, dict[str, Any]]],
    gap: Mapping[str, Any] | None = None,
    probe: Mapping[str, Any] | None = None,
) -> list[str]:
    """Plain conclusions computed from the per-recipe summaries (``summarize`` output), the modality gap and the
    embedding-level transfer probe."""
    from vlmforge.shapes.lab.transfer_probe import carried_by_vector, probe_statements
    from vlmforge.shapes.lab.unicorn_aligned import ALIGNED

    lines = [STAND_IN_NOTE]
    shift, none, control = (summaries.get(f"unicorn-{m}") for m in ("mean_shift", "none", "control"))
    if shift and control:
        lines.append(_parity_line("Text-only mean_shift", shift, control))
    aligned = summaries.get(ALIGNED)
    if aligned and control:
        lines.append(_parity_line(
            "With covariance alignment at test time (an extension beyond the paper: the same mean_shift models, the "
            "calibration images' covariance also matched to the training store's; docs/unicorn.md), mean_shift",
            aligned, control))  # fmt: skip
    if shift and none:
        better = [t for t in none if shift[t]["mean"] > none[t]["mean"]]
        avg_s, avg_n = (sum(x[t]["mean"] for t in none) / len(none) for x in (shift, none))
        lines.append(
            f"mean_shift {'beats' if avg_s > avg_n else 'does not beat'} none on average over question types "
            f"({avg_s:.3f} vs {avg_n:.3f}); it is higher on {len(better)} of {len(none)} types. Per type "
            f"(mean_shift - none): {'; '.join(f'{t} {_beats(shift[t], none[t])}' for t in none)}."
        )
    if control:
        stuck = [t for t, c in control.items() if _near_chance(c)]
        undertrained = len(stuck) == len(control)
        if undertrained:  # nothing is learnt at all: an undertrained control says nothing about limits
            lines.append(f"The image-trained control is within {NEAR_CHANCE} of chance (or of the question-only "
                         "baseline) on every question type: it is undertrained, so these runs say nothing about what "
                         "one pooled vector can carry, and comparisons with it test nothing.")  # fmt: skip
            stuck = []
        for task in stuck:
            c = control[task]
            needed = PROBE_FOR_QUESTION.get(task)
            if probe and needed in probe["majority"] and carried_by_vector(probe, needed):
                image, base = probe["accuracy"]["image"][needed], probe["majority"][needed]
                lines.append(
                    f"The image-trained control does not learn `{task}` ({c['mean']:.3f}, chance {c['chance']:.3f}), "
                    f"although the pooled vector carries what it needs (linear probe on `{needed}`: {image:.3f} vs "
                    f"{base:.3f}): the limit is the tiny LM's training, not the vector."
                )
                continue
            why = WHY_NOT_CARRIED.get(task, "one pooled vector does not keep this information")
            lines.append(
                f"A single pooled 384-d embedding does not carry `{task}` here: the image-trained control, which "
                f"sees the real image through the same one-vector input, reaches {c['mean']:.3f} (chance "
                f"{c['chance']:.3f}); likely because {why}."
            )
        if not stuck and not undertrained:
            lines.append(f"The image-trained control rises more than {NEAR_CHANCE} above chance and the question-only "
                         "baseline on every question type: the single pooled vector carries some of each.")  # fmt: skip
    if gap:
        after = ", ".join(f"{m} {v:.3f}" for m, v in gap["after"].items())
        lines.append(
            f"Modality gap (mean paired cosine of caption vs image embedding over {gap['pairs']} train images): "
            f"before transfer {gap['before']:.3f}; after transfer and image-side centring: {after}."
        )
    if probe:
        lines += probe_statements(probe, PARITY)
    return lines


def _parity_line(subject: str, shift: Mapping[str, Any], control: Mapping[str, Any]) -> str:
    """Whether ``shift`` reaches PARITY of ``control`` on every question type where the control learns something."""
    informative = [t for t, c in control.items() if not _near_chance(c) and c["mean"] > 0]
    reached = [t for t in informative if shift[t]["mean"] >= PARITY * control[t]["mean"]]
    missed = [t for t in informative if t not in reached]
    skipped = [t for t in control if t not in informative]
    details = "; ".join(
        f"{t} {shift[t]['mean']:.3f} vs {c['mean']:.3f}"
        + (f" = {shift[t]['mean'] / c['mean']:.0%}" if t in informative else " (control not above baselines)")
        for t, c in control.items()
    )
    return (
        f"{subject} reaches >= {PARITY:.0%} of the image-trained control on {len(reached)} of "
        f"{len(informative)} question types where the control is above chance and the question-only baseline "
        f"({', '.join(reached) or 'none'}); "
        f"it falls short on {', '.join(missed) or 'no type'}"
        + (
            f"; not judged (control within {NEAR_CHANCE} of chance or of the question-only baseline): "
            f"{', '.join(skipped)}"
            if skipped
            else ""
        )
        + f". Per type (mean_shift vs control): {details}."
    )


def _near_chance(entry: Mapping[str, Any]) -> bool:
    floors = [entry.get(key) for key in ("chance", "question_only") if entry.get(key) is not None]
    return bool(floors) and entry["mean"] - max(floors) < NEAR_CHANCE


def unicorn_report_lines(results: Mapping[str, Any]) -> list[str]:
    """The report's Unicorn section: one table of every recipe per question type, the gap and the statements."""
    section, recipes = results["unicorn"], results["recipes"]
    names = [n for n in recipes if n.startswith("unicorn-") or n == "bunny"]
    tasks = list(recipes[names[0]]["summary"]) if names else []
    lines = ["## Unicorn: text-only vs image-trained control", "", section["note"], "", section["calibration"] + ".",
             "", "| question type | " + " | ".join(names) + " | question only |", "|---" * (len(names) + 2) + "|"]  # fmt: skip
    for task in tasks:
        cells = []
        for n in names:
            e = recipes[n]["summary"][task]
            cells.append(f"{e['mean']:.3f}" + (f" ± {e['se']:.3f}" if e.get("se") is not None else ""))
        blind = recipes[names[0]]["summary"][task].get("question_only")  # the same baseline for every recipe
        cells.append("n/a" if blind is None else f"{blind:.3f}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    gap = section["modality_gap"]
    lines += [
        "",
        "| modality gap (mean paired cosine) | value |",
        "|---|---|",
        f"| before transfer | {gap['before']:.3f} |",
    ]
    lines += [f"| after {m} | {v:.3f} |" for m, v in gap["after"].items()]
    if section.get("probe"):
        from vlmforge.shapes.lab.transfer_probe import probe_report_lines

        lines += ["", *probe_report_lines(section["probe"])]
    lines += ["", *(f"- {s}" for s in section["statements"][1:]), ""]
    return lines
