"""Judge a records file: every record gets a ``score`` (and ``judge``: the method and model), resumably.

Records whose score could not be made (the released score on a one-token answer, a server without the words in
its top logprobs, an unreadable image) go to ``rejected.jsonl`` with the reason; failed requests stay pending.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmforge.data.images import load_image
from vlmforge.data.records import read_records
from vlmforge.errors import ConfigError, DataError
from vlmforge.manifest import file_fingerprint
from vlmforge.synth.backends import GenerationFailure
from vlmforge.synth.genixer.backends import model_identity
from vlmforge.synth.genixer.folders import guard_resume, image_folder_of
from vlmforge.synth.genixer.judge import JUDGE_PROMPT, SCORES, judge_prompt
from vlmforge.synth.jobs import Manifest
from vlmforge.synth.runner import BatchOutcome, run_stage

OUTPUT = "judged.jsonl"


def judge_records(
    records: Path,
    out_dir: Path,
    judge: Any,
    *,
    image_folder: Path | None = None,
    score: str = "p_yes",
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Score ``records`` with ``judge`` (``judges.LocalJudge`` / ``OpenAIJudge``) into ``out_dir/judged.jsonl``."""
    if score not in SCORES:
        raise ConfigError(f"--score must be one of {SCORES}, got {score!r}")
    manifest = Manifest(out_dir, "genixer.judge")
    items = []
    for where, rec in read_records(records):
        if "id" not in rec or not isinstance(rec.get("image"), str) or not rec.get("conversations"):
            raise DataError(where, "a record to judge needs 'id', one 'image' and 'conversations'", "bad_record")
        items.append({**rec, "id": str(rec["id"])})
    folder = image_folder_of(records, image_folder)
    inputs = {"records": file_fingerprint(records), "score": score, "judge": judge.name, "judge_model": model_identity(judge),
              "seed": seed}  # fmt: skip
    guard_resume(out_dir, {**inputs, "image_folder": str(folder)})

    def process(batch: list[dict[str, Any]]) -> BatchOutcome:
        outcome, ready, work = BatchOutcome(), [], []
        for rec in batch:
            try:
                image = load_image(folder / rec["image"], f"{records}:id={rec['id']}")
            except DataError as err:
                outcome.rejected.append((rec["id"], err.code))
                continue
            ready.append(rec)
            work.append((image, judge_prompt(rec)))
        scores = judge.p_yes(work) if score == "p_yes" else judge.released(work, seed=seed)
        for rec, result in zip(ready, scores, strict=True):
            if isinstance(result, GenerationFailure):
                outcome.failed[f"judge_failed:{result.reason}"] += 1
            elif result[0] is None:
                outcome.rejected.append((rec["id"], result[1]))
            else:
                outcome.accepted.append({**rec, "score": result[0], "judge": {"score": score, "model": judge.name}})
        return outcome

    result = run_stage(items, out_dir, OUTPUT, process, batch_size=batch_size, desc="judge")
    return manifest.write(
        judge=judge.name,
        score=score,
        prompt=JUDGE_PROMPT,
        inputs=[file_fingerprint(records)],
        image_folder=str(folder),
        output=OUTPUT,
        **result,
    )
