"""The batched, resumable, shardable evaluation loop.

Per task: load samples, skip the ones whose predictions are already on disk, ask the generator for the rest in
batches and append each batch to ``samples_<task>.part<rank>.jsonl`` as it finishes (so an interrupted run loses
at most one batch). Under ``accelerate launch`` each rank takes every k-th sample; after a barrier rank 0 merges
the parts into ``samples_<task>.jsonl`` (in task order), scores, and writes ``results.json`` + ``report.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlmforge.data.records import OnError, check_on_error
from vlmforge.errors import DataError, VlmforgeError
from vlmforge.eval.breakdown import check_group_by, group_metrics
from vlmforge.eval.budget import TOO_LONG, Budgets, context_counts, fit_budgets, scored
from vlmforge.eval.reuse import model_identity, prepare_folder, task_settings
from vlmforge.eval.tasks import check_data_keys, resolve
from vlmforge.eval.types import GenerationRequest, Generator, Sample, Task
from vlmforge.manifest import PACKAGES, package_versions

_VERSIONED = (*PACKAGES, "pillow", "numpy")


def limit_samples(samples: list[Sample], limit: int | None) -> list[Sample]:
    """The first ``limit`` questions, keeping every rotation of a circular question together."""
    if limit is None:
        return samples
    keep: list[str] = []
    for s in samples:
        if s.group_id not in keep:
            if len(keep) == limit:
                break
            keep.append(s.group_id)
    allowed = set(keep)
    return [s for s in samples if s.group_id in allowed]


def _read_answers(path: Path, known: Mapping[str, Sample], task: str) -> dict[str, dict[str, Any]]:
    """id -> saved record (its raw ``prediction``, or ``skipped`` with why) from a samples file. A torn last line
    (interrupted write) is dropped; an id the task does not have means the file belongs to another task (or other
    data) and is an error, not silently reused."""
    out: dict[str, dict[str, Any]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(lines):
                break
            raise DataError(f"{path}:{i}", f"invalid JSON in predictions: {err.msg}") from err
        if not isinstance(record, dict) or "id" not in record or not {"prediction", "skipped"} & set(record):
            raise DataError(f"{path}:{i}", "prediction record needs `id` and `prediction` (or `skipped`)")
        if str(record["id"]) not in known:
            raise DataError(
                f"{path}:{i}",
                f"sample id {record['id']!r} is not in task {task!r}: predictions from another task or other data? "
                "Use a fresh --out folder or delete this file.",
                "foreign_prediction",
            )
        out[str(record["id"])] = record
    return out


def _unique(samples: list[Sample], task: Task) -> list[Sample]:
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise DataError(s.where or task.name, f"duplicate sample id {s.id!r} in task {task.name}")
        seen.add(s.id)
    return samples


def _drop_torn_tail(path: Path) -> None:
    """Cut a half-written last line (the run was killed mid-write) so that appended records start on a new line."""
    if not path.exists():
        return
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(raw.rfind(b"\n") + 1)


def _record(task: Task, sample: Sample, prediction: str, max_new_tokens: int | None = None) -> dict[str, Any]:
    """A sample's saved line; ``max_new_tokens`` only when its budget was cut to fit the model's context."""
    parsed = task.parse(prediction, sample.meta)
    return {
        "id": sample.id, "prompt": sample.prompt, "prediction": prediction, "parsed": parsed,
        "target": sample.target, "correct": task.judge(parsed, sample.target, sample.meta),
        **({"group": sample.group} if sample.group is not None else {}),
        **({"max_new_tokens": max_new_tokens} if max_new_tokens is not None else {}),
    }  # fmt: skip


def _saved(task: Task, sample: Sample, answer: Mapping[str, Any]) -> dict[str, Any]:
    if "skipped" in answer:
        return {"id": sample.id, "prompt": sample.prompt, "skipped": answer["skipped"], "reason": answer.get("reason")}
    return _record(task, sample, str(answer["prediction"]), answer.get("max_new_tokens"))


def _shard() -> tuple[Any, int, int]:
    import torch
    from accelerate import PartialState

    # On a CPU-only machine accelerate treats torchrun/`accelerate launch` ranks as distributed only with cpu=True.
    state = PartialState(cpu=not torch.cuda.is_available())
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:  # ranks would all do (and write) everything
        raise VlmforgeError(
            f"launched with WORLD_SIZE={launched} but accelerate sees {state.num_processes} process(es): "
            "create PartialState(cpu=True) on CPU-only machines before calling evaluate()"
        )
    return state, state.process_index, state.num_processes


def pending(task: Task, samples: list[Sample], out_dir: Path, rank: int, world: int) -> list[Sample]:
    """This rank's samples that have no saved prediction yet (a skipped one is counted again: it costs no
    generation, and a rerun that does not skip must refuse it)."""
    known = {s.id: s for s in samples}
    done: dict[str, dict[str, Any]] = {}
    for path in sorted(out_dir.glob(f"samples_{task.name}.*jsonl")):
        done.update(_read_answers(path, known, task.name))
    return [s for i, s in enumerate(samples) if i % world == rank and "prediction" not in done.get(s.id, {})]


def run_task(
    generator: Generator, task: Task, todo: list[Sample], out_dir: Path, *, batch_size: int, max_new_tokens: int,
    rank: int, bar: Any = None, budgets: Budgets | None = None,
) -> int:  # fmt: skip
    """Generate the predictions of ``todo``, appending to this rank's part file and advancing ``bar`` (a tqdm
    bar, optional); ``budgets`` (eval/budget.py) names the questions skipped or given less than ``max_new_tokens``
    to fit the model's context. Returns how many were generated."""
    budgets = budgets or Budgets()
    part = out_dir / f"samples_{task.name}.part{rank}.jsonl"
    _drop_torn_tail(part)
    with part.open("a", encoding="utf-8") as fh:
        for sample in todo:
            if sample.id in budgets.skipped:
                skip = {"id": sample.id, "skipped": TOO_LONG, "reason": budgets.skipped[sample.id]}
                fh.write(json.dumps(skip, ensure_ascii=False) + "\n")
        todo = [s for s in todo if s.id not in budgets.skipped]
        if bar is not None:
            bar.update(len(budgets.skipped))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            requests = [
                GenerationRequest(s.prompt, s.open_images(), budgets.cut.get(s.id, max_new_tokens)) for s in batch
            ]
            outputs = generator(requests)
            if len(outputs) != len(batch):
                raise VlmforgeError(f"generator returned {len(outputs)} answers for {len(batch)} requests")
            for sample, text in zip(batch, outputs, strict=True):
                record = _record(task, sample, str(text), budgets.cut.get(sample.id))
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            if bar is not None:
                bar.update(len(batch))
    return len(todo)


def merge_and_score(
    task: Task,
    samples: list[Sample],
    out_dir: Path,
    data: Mapping[str, str],
    scoring: str = "reference",
    group_by: Sequence[str] = (),
) -> dict[str, Any]:
    """Rank 0: fold the part files into samples_<task>.jsonl (task order) and compute the task's metrics, with the
    headline metric per value of each ``group_by`` field (``task`` already scores the ``scoring`` way, which is
    recorded). Questions skipped for their length are left out of the scores and counted (eval/budget.py)."""
    known = {s.id: s for s in samples}
    final = out_dir / f"samples_{task.name}.jsonl"
    parts = sorted(out_dir.glob(f"samples_{task.name}.part*.jsonl"))
    done: dict[str, dict[str, Any]] = {}
    for path in [final, *parts] if final.exists() else parts:
        done.update(_read_answers(path, known, task.name))
    missing = [s.id for s in samples if s.id not in done]
    if missing:
        raise VlmforgeError(f"task {task.name}: {len(missing)} samples have no prediction (first: {missing[0]})")
    tmp = final.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(json.dumps(_saved(task, s, done[s.id]), ensure_ascii=False) + "\n")
    tmp.replace(final)  # atomic: a crash here leaves either the old or the new file, never half of one
    for path in parts:
        path.unlink()
    kept = scored(samples, done)
    preds = [str(done[s.id]["prediction"]) for s in kept]
    metrics = task.score(preds, [s.target for s in kept], [s.meta for s in kept])
    metrics.update(group_metrics(task, preds, kept, group_by))
    return {
        "description": task.description, "scoring": scoring, "primary": task.primary,
        "chance": task.chance_level(data, kept), "n_samples": len(kept),
        "n_questions": len({s.group_id for s in kept}), "metrics": metrics, **context_counts(samples, done),
    }  # fmt: skip


def _write_results(
    out: Path, resolved: list[Task], loaded: dict[str, list[Sample]], data: dict[str, str],
    model: Mapping[str, Any] | None, config: dict[str, Any], group_by: Sequence[str],
) -> None:  # fmt: skip
    """Rank 0: merge and score every task, keep the folder's other tasks, write results.json and report.md."""
    from vlmforge.eval.report import write_report

    results_file = out / "results.json"
    previous = json.loads(results_file.read_text()) if results_file.exists() else {}
    task_results = dict(previous.get("tasks", {}))
    for task in resolved:
        task_results[task.name] = merge_and_score(task, loaded[task.name], out, data, config["scoring"], group_by)
    results = {
        "model": dict(model or {}),
        "tasks": task_results,
        "config": config,
        "versions": package_versions(_VERSIONED),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = results_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    tmp.replace(results_file)
    write_report(results, out)


def evaluate(
    generator: Generator,
    tasks: Sequence[str | Task],
    out_dir: str | Path,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    *,
    data: Mapping[str, str] | None = None,
    model: Mapping[str, Any] | None = None,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    force: bool = False,
    scoring: str = "reference",
    group_by: Sequence[str] = (),
    on_error: OnError = "raise",
) -> dict[str, Any]:
    """Evaluate ``generator`` on ``tasks`` (names, groups such as ``shapes``, or Task objects).

    ``data`` maps the tasks' data keys to paths (``--data KEY=PATH``; a key no chosen task reads is an error);
    ``model`` (name, path, ...) is recorded in results.json; ``max_new_tokens`` overrides each task's own default;
    ``group_by`` names sample fields to break each task's headline metric down by (``FIELD=VALUE/<metric>``). Saved predictions in ``out_dir`` are
    reused only for the same model (``model["path"]``'s files) and task settings (eval/reuse.py); otherwise this
    stops with a StaleOutputError, and ``force`` deletes them first. ``shard=(rank, world)`` overrides the
    ranks from ``accelerate.PartialState`` (for custom launchers and tests; then no barrier is used, and the
    caller must run rank 0 last). ``scoring`` is "reference" (each benchmark parsed as its reference harness
    does) or "robust" (the references' plain bugs fixed; docs/evaluation.md); it changes the scores, not the
    predictions, so a rerun with the other mode rescores the saved answers. Before generating, each question's
    answer budget is fitted to the model's context (eval/budget.py): a question whose prompt leaves no room stops
    the run naming it, or with ``on_error="skip"`` is left out of the scores and counted. Returns the results dict
    (the content of results.json) on every rank.
    """
    from tqdm.auto import tqdm

    check_on_error(on_error)
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = dict(data or {})
    state, rank, world = (None, *shard) if shard else _shard()
    barrier = state.wait_for_everyone if state is not None and world > 1 else (lambda: None)
    resolved = [task.with_scoring(scoring) for task in resolve(tasks)]
    check_data_keys(resolved, data)
    loaded, settings = {}, {}
    for task in resolved:
        everything = task.load(data)
        loaded[task.name] = _unique(limit_samples(everything, limit), task)
        settings[task.name] = task_settings(task, everything, data, max_new_tokens or task.max_new_tokens)
    check_group_by(group_by, loaded)
    prepare_folder(out, model_identity(model), settings, force, write=rank == 0)
    barrier()
    todo = {task.name: pending(task, loaded[task.name], out, rank, world) for task in resolved}
    tokens = {task.name: max_new_tokens or task.max_new_tokens for task in resolved}
    # every question is counted before any is answered, so a run stops on a too-long one at once
    budgets = {t.name: fit_budgets(generator, t, todo[t.name], tokens[t.name], on_error) for t in resolved}
    show = progress and rank == 0
    bar = tqdm(total=sum(map(len, todo.values())), desc="eval", unit="q", disable=not show, dynamic_ncols=True)
    for task in resolved:
        bar.set_description(task.name)
        run_task(generator, task, todo[task.name], out, batch_size=batch_size, max_new_tokens=tokens[task.name],
                 rank=rank, bar=bar, budgets=budgets[task.name])  # fmt: skip
    bar.close()
    barrier()
    results_file = out / "results.json"
    if rank == 0:
        config = {"batch_size": batch_size, "max_new_tokens": max_new_tokens, "limit": limit, "world_size": world,
                  "data": data, "scoring": scoring, "group_by": list(group_by), "on_error": on_error}  # fmt: skip
        _write_results(out, resolved, loaded, data, model, config, group_by)
        if show:
            total = sum(map(len, loaded.values()))
            reused = f", {total - sum(map(len, todo.values()))} reused" if world == 1 else ""
            print(f"[eval] {len(resolved)} task(s), {total} questions{reused}, {time.perf_counter() - started:.0f} s "
                  f"-> {results_file} (+ report.md, samples_<task>.jsonl)")  # fmt: skip
    barrier()
    return json.loads(results_file.read_text()) if results_file.exists() else {}
