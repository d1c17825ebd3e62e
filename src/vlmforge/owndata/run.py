"""One command from a user's records to a model and a report: prepare the data, size the stages, train, evaluate
the held-out records per question kind, and set the result against the readout ceiling.

Layout of ``OUT``: ``data/`` (the prepared records, vlmforge.owndata.prepare), one folder per stage (as
`vlmforge train RECIPE` writes them), ``eval/`` (`vlmforge eval`'s results on the held-out records, per kind),
``probe/`` (cached vision features), ``own_data_inputs.json`` (what the data was prepared from) and
``manifest.json`` (the split, the schedules, accuracy per kind, the ceiling and the ratio).
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.data.kinds import kind_of
from vlmforge.eval.probe import report_lines, run_probe, with_vlm
from vlmforge.manifest import write_manifest
from vlmforge.owndata.prepare import Prepared, prepare
from vlmforge.owndata.settings import OwnDataSettings, load_template, template_text
from vlmforge.provenance import check_inputs, path_identity, read_inputs, write_inputs
from vlmforge.train.recipe import Recipe, recipe_from_dict
from vlmforge.train.schedule import epoch_steps, size_stage
from vlmforge.train.stage import run_recipe

OWN_INPUTS = "own_data_inputs.json"


@dataclass
class OwnDataJob:
    """What `vlmforge train --data ...` was given."""

    data: Path
    image_folder: Path | None
    vision: str
    lm: str
    out: Path
    eval_data: Path | None = None
    template: Path | None = None
    overrides: list[str] = field(default_factory=list)
    resume: bool = False
    force: bool = False

    @property
    def images(self) -> Path:
        return self.image_folder if self.image_folder is not None else self.data.parent


def _recipe(job: OwnDataJob, recipe_data: dict, overrides: list[str], prepared: Prepared | None) -> Recipe:
    """The template's recipe for this job; without captions, stage 1 trains the projector on the conversations."""
    data = copy.deepcopy(recipe_data)
    data["output_dir"] = str(job.out)
    stage1 = str(job.out / "data" / "stage1.jsonl")
    for spec in (data.get("stages") or {}).values():
        path = (spec or {}).get("data", {}).get("path")
        if prepared is not None and not prepared.captions and path == stage1:
            spec.update(kind="finetune", tune="projector")
            spec["data"]["path"] = str(prepared.files["train"])
    return recipe_from_dict(data, overrides)


def _check_inputs(job: OwnDataJob, settings: OwnDataSettings) -> dict[str, Any]:
    """Stop, naming the difference, when OUT's data was prepared from other records or settings."""
    split = ("heldout_fraction", "heldout_max_images", "split_seed", "group_by")  # the schedule: the stage guard's
    inputs = {
        "own_data": {key: getattr(settings, key) for key in split},
        "data": path_identity(job.data),
        "eval_data": path_identity(job.eval_data) if job.eval_data else None,
        "image_folder": str(job.images.resolve()),
    }
    recorded = read_inputs(job.out, OWN_INPUTS)
    if recorded is not None and not job.force:
        check_inputs(job.out, inputs, f"the prepared data in {job.out / 'data'}", "Pass --force to prepare and "
                     "train again (earlier results there are deleted), or write elsewhere with --out DIR.",
                     recorded=recorded)  # fmt: skip
    return inputs


def _size_stages(recipe: Recipe, settings: OwnDataSettings, prepared: Prepared) -> dict[str, dict[str, Any]]:
    """Set each unsized stage's ``max_steps`` from its record count; print and return one line of numbers each."""
    sized = {}
    for name, stage in recipe.stages.items():
        records = len(prepared.captions) if stage.kind == "pretrain" else len(prepared.train)
        batch, schedule = stage.global_batch_size, settings.schedule.get(name)
        if stage.max_steps > 0 or schedule is None:
            how = "set in the recipe" if stage.max_steps > 0 else f"{stage.epochs:g} epochs, no own_data.schedule"
            steps = stage.max_steps if stage.max_steps > 0 else epoch_steps(records, batch, stage.epochs)
        else:
            steps = stage.max_steps = size_stage(records, batch, schedule)
            how = f"{schedule.epochs:g} epochs, at least {schedule.min_steps}" + (
                f", at most {schedule.max_steps}" if schedule.max_steps else ""
            )
        print(f"[{name}] schedule: {records} records, global batch {batch} -> {steps} optimizer steps ({how})")
        sized[name] = {"records": records, "global_batch_size": batch, "steps": steps, "rule": how}
    return sized


def _evaluate(final: Path, prepared: Prepared, job: OwnDataJob, on_error: str) -> dict[str, Any]:
    """`vlmforge eval` on the held-out records; ``on_error`` (the recipe's) decides, as for the training records,
    whether a held-out question too long for the model's context stops the report or is skipped and counted."""
    from vlmforge.eval.generator import load_generator
    from vlmforge.eval.runner import evaluate

    data = {"jsonl": str(prepared.files["heldout"]), "jsonl_images": str(job.images)}
    model = {"name": job.out.name, "path": str(final)}
    results = evaluate(load_generator(final), ["jsonl"], job.out / "eval", batch_size=16, data=data, model=model,
                       force=job.force, group_by=[prepared.field], on_error=on_error)  # fmt: skip
    skipped = results["tasks"]["jsonl"].get("rejections")
    if skipped:
        print(f"[own-data] {skipped['total']} held-out question(s) skipped and left out of the accuracy "
              f"({', '.join(f'{k}: {n}' for k, n in skipped['by_reason'].items())}): on_error=skip")  # fmt: skip
    return results


def _ceiling(job: OwnDataJob, recipe: Recipe, settings: OwnDataSettings, prepared: Prepared) -> dict[str, Any]:
    if not settings.probe:
        train = Counter(kind_of(r, prepared.field) for r in prepared.train)
        held = Counter(kind_of(r, prepared.field) for r in prepared.heldout)
        kinds = {k: {"train": train[k], "heldout": held[k]} for k in sorted(set(train) | set(held)) if k is not None}
        return {"field": prepared.field, "kinds": kinds}
    model = recipe.model
    return run_probe(prepared.train, prepared.heldout, job.images, model.vision_model, prepared.field,
                     layer=model.vision_feature_layer, strategy=model.vision_feature_select_strategy,
                     cache=job.out / "probe", seed=recipe.seed)  # fmt: skip


def run_own_data(job: OwnDataJob, callbacks: list | None = None) -> dict[str, Any]:
    """Prepare, train, evaluate and probe (see the module's docstring); returns what manifest.json holds."""
    started = time.perf_counter()
    variables = {"vision": job.vision, "lm": job.lm, "images": str(job.images),
                 "train": str(job.out / "data" / "train.jsonl"), "stage1": str(job.out / "data" / "stage1.jsonl")}  # fmt: skip
    settings, recipe_data, overrides = load_template(template_text(job.template), variables, job.overrides)
    on_error = _recipe(job, recipe_data, overrides, None).on_error  # also checks the settings before any work
    inputs = _check_inputs(job, settings)
    prepared = prepare(job.data, job.images, job.eval_data, settings, on_error, job.out / "data")
    write_inputs(job.out, inputs, OWN_INPUTS)
    print(f"[own-data] {len(prepared.train)} training records, {len(prepared.heldout)} held out "
          f"({prepared.split['by']}); question kinds by '{prepared.field}'; rejected {prepared.rejections.total}")  # fmt: skip
    if not prepared.captions:
        print("[own-data] no captions in the records (no `caption` field, no `task: caption` records): stage 1 "
              "trains the projector alone on the conversations")  # fmt: skip
    recipe = _recipe(job, recipe_data, overrides, prepared)
    schedule = _size_stages(recipe, settings, prepared)
    final = run_recipe(recipe, resume=job.resume, force=job.force, callbacks=callbacks)
    results = _evaluate(final, prepared, job, recipe.on_error)
    ceiling = _ceiling(job, recipe, settings, prepared)
    ceiling["kinds"] = with_vlm(ceiling["kinds"], results, prepared.field)
    print(f"[own-data] held-out accuracy per {prepared.field} ({job.out / 'eval' / 'results.json'}):")
    print("\n".join(report_lines(ceiling["kinds"], prepared.field)))
    summary = {"stage1": prepared.stage1_source, "split": prepared.split, "schedule": schedule,
               "heldout_accuracy": {k: e.get("vlm_accuracy") for k, e in ceiling["kinds"].items()},
               "readout_ceiling": ceiling, "final": str(final)}  # fmt: skip
    if "rejections" in results["tasks"]["jsonl"]:
        summary["heldout_rejections"] = results["tasks"]["jsonl"]["rejections"]
    write_manifest(job.out, inputs=[str(job.data)], own_data=settings.to_dict(), recipe=recipe.to_dict(),
                   rejections=prepared.rejections.as_dict(), wall_seconds=time.perf_counter() - started, **summary)  # fmt: skip
    print(f"final model: {final}\nreport: {job.out / 'manifest.json'}")
    return summary
