"""Unicorn stages 1 and 2: seed captions -> dense captions -> multi-turn QA records (text only).

Both are resumable (see ``vlmforge.synth.runner``) and write ``manifest.json`` next to their output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmforge.manifest import file_fingerprint
from vlmforge.synth.backends import GenerationFailure, TextGenerator
from vlmforge.synth.jobs import Manifest, read_records
from vlmforge.synth.runner import BatchOutcome, dedupe, run_stage
from vlmforge.synth.unicorn.prompts import (
    PAPER_KIND_RATIOS,
    densify_messages,
    instruct_messages,
    prompt_record,
)
from vlmforge.synth.unicorn.qa import QAError, assign_kind, parse_qa, to_conversations

DENSIFY_OUTPUT = "captions.jsonl"
INSTRUCT_OUTPUT = "records.jsonl"


def densify(
    seeds: Path,
    out_dir: Path,
    generator: TextGenerator,
    *,
    batch_size: int = 32,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    seed: int = 0,
    min_words: int = 5,
) -> dict[str, Any]:
    """Stage 1. ``seeds``: JSONL with ``id`` + ``caption`` or plain text lines. Writes
    ``out_dir/captions.jsonl`` records ``{"id", "seed_caption", "caption"}``; returns the manifest."""
    out_dir = Path(out_dir)
    manifest = Manifest(out_dir, "unicorn.densify")
    records, _, dup_counts = dedupe(list(read_records(seeds)))

    def process(batch: list[dict[str, Any]]) -> BatchOutcome:
        prompts = [densify_messages(r["caption"]) for r in batch]
        texts = generator.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        outcome = BatchOutcome()
        for rec, text in zip(batch, texts, strict=True):
            if isinstance(text, GenerationFailure):
                outcome.failed[f"generation_failed:{text.reason}"] += 1
            elif len(text.split()) < min_words:  # empty or truncated output is no description
                outcome.rejected.append((rec["id"], "too_short"))
            else:
                outcome.accepted.append({"id": rec["id"], "seed_caption": rec["caption"], "caption": text.strip()})
        return outcome

    result = run_stage(records, out_dir, DENSIFY_OUTPUT, process, batch_size=batch_size, desc="densify")
    result["counts"].update(dup_counts)
    return manifest.write(
        backend=generator.name,
        generation={"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed},
        prompts=prompt_record()["densify"],
        inputs=[file_fingerprint(seeds)],
        output=DENSIFY_OUTPUT,
        **result,
    )


def instruct(
    captions: Path,
    out_dir: Path,
    generator: TextGenerator,
    *,
    batch_size: int = 32,
    max_new_tokens: int = 1536,
    temperature: float = 0.0,
    seed: int = 0,
    kind_ratios: dict[str, float] | None = None,
    max_attempts: int = 3,
    min_pairs: int = 6,
    max_pairs: int = 8,
) -> dict[str, Any]:
    """Stage 2. ``captions``: JSONL with ``id`` + ``caption`` (stage 1's output). Writes ``out_dir/records.jsonl``:
    ``{"id", "image_embedding", "conversations", "caption", "task", "provenance"}``; returns the manifest.

    Malformed output is regenerated with seed ``seed + attempt`` (a new sample even from a deterministic server)
    up to ``max_attempts`` in all, then rejected with the last attempt's reason."""
    out_dir = Path(out_dir)
    ratios = kind_ratios or PAPER_KIND_RATIOS
    manifest = Manifest(out_dir, "unicorn.instruct")
    records, caption_dups, dup_counts = dedupe(list(read_records(captions)), text_field="caption")

    def process(batch: list[dict[str, Any]]) -> BatchOutcome:
        outcome = BatchOutcome()
        kinds = {r["id"]: assign_kind(r["id"], ratios) for r in batch}
        todo, last_reason = list(batch), {}
        for attempt in range(max_attempts):
            if not todo:
                break
            outcome.retries += len(todo) if attempt else 0
            prompts = [instruct_messages(r["caption"], kinds[r["id"]], min_pairs, max_pairs) for r in todo]
            texts = generator.generate(
                prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + attempt
            )
            again = []
            for rec, text in zip(todo, texts, strict=True):
                if isinstance(text, GenerationFailure):
                    outcome.failed[f"generation_failed:{text.reason}"] += 1
                    continue
                try:
                    pairs = parse_qa(text, kinds[rec["id"]], min_pairs=min_pairs, max_pairs=max_pairs)
                except QAError as err:
                    last_reason[rec["id"]] = err.reason
                    again.append(rec)
                    continue
                outcome.accepted.append(_record(rec, kinds[rec["id"]], pairs, generator.name, attempt))
            todo = again
        outcome.rejected += [(r["id"], last_reason[r["id"]]) for r in todo]
        return outcome

    result = run_stage(
        records,
        out_dir,
        INSTRUCT_OUTPUT,
        process,
        batch_size=batch_size,
        desc="instruct",
        pre_rejected=caption_dups,
    )
    result["counts"].update(dup_counts)
    return manifest.write(
        backend=generator.name,
        generation={"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed},
        prompts=prompt_record()["instruct"],
        kind_ratios=ratios,
        validation={"max_attempts": max_attempts, "min_pairs": min_pairs, "max_pairs": max_pairs},
        inputs=[file_fingerprint(captions)],
        output=INSTRUCT_OUTPUT,
        **result,
    )


def _record(src: dict[str, Any], kind: str, pairs: list[dict[str, Any]], backend: str, attempt: int) -> dict:
    provenance = {"stage": "unicorn.instruct", "backend": backend, "attempt": attempt}
    if "seed_caption" in src:
        provenance["seed_caption"] = src["seed_caption"]
    return {
        "id": src["id"],
        # No image file: the caption's embedding (stage 3, keyed by this id) is the image at training time.
        "image_embedding": src["id"],
        "conversations": to_conversations(pairs, kind),
        "caption": src["caption"],
        "task": kind,
        "provenance": provenance,
    }
