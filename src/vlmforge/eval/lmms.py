"""lmms-eval interop: a vlmforge task's questions written as an lmms-eval local task, and lmms-eval's answers read
back, so that `lmms-eval --model llava_hf` can evaluate an exported model on exactly the questions `vlmforge eval`
asks (docs/evaluation.md, "Under lmms-eval").

The task folder holds ``NAME.yaml`` (``dataset_path: json`` over a local file: nothing is downloaded), ``NAME.jsonl``
(one question per line: id, prompt, image paths, acceptable answers) and the small module the YAML names for
images, prompts and an exact-match score. Inline images (VLMEvalKit TSVs) are written out as files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from vlmforge.errors import VlmforgeError
from vlmforge.eval.runner import limit_samples
from vlmforge.eval.types import Sample, Task

UTILS_MODULE = "vlmforge_lmms_utils"
_UTILS = '''"""Written by vlmforge (vlmforge.eval.lmms) for its lmms-eval local tasks."""

from PIL import Image


def doc_to_visual(doc):
    return [Image.open(path).convert("RGB") for path in doc["images"]]


def doc_to_text(doc):
    return doc["prompt"]


def process_results(doc, results):
    answer = results[0].strip() if results else ""
    return {"exact_match": float(answer in doc["targets"])}
'''


def _yaml(name: str, questions: Path, max_new_tokens: int) -> str:
    return f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {json.dumps(str(questions.absolute()))}
test_split: test
output_type: generate_until
doc_to_visual: !function {UTILS_MODULE}.doc_to_visual
doc_to_text: !function {UTILS_MODULE}.doc_to_text
doc_to_target: targets
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  do_sample: false
process_results: !function {UTILS_MODULE}.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def _image_paths(sample: Sample, folder: Path) -> list[str]:
    out = []
    for ref in sample.images:
        if isinstance(ref, bytes):  # lmms-eval's documents hold paths, so inline images become files
            path = folder / "images" / f"{hashlib.sha256(ref).hexdigest()[:16]}.img"  # PIL reads the format inside
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(ref)
            out.append(str(path))
        else:
            out.append(str(Path(ref).absolute()))
    return out


def write_lmms_task(
    task: Task, data: Mapping[str, str], folder: str | Path, *, limit: int | None = None, name: str | None = None
) -> str:
    """Write ``task``'s questions (the first ``limit``) as an lmms-eval task in ``folder``; returns its name, to pass
    as ``lmms-eval --tasks NAME --include_path FOLDER``. The answer length is the task's own."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = name or f"vlmforge_{task.name}"
    questions = folder / f"{name}.jsonl"
    with questions.open("w", encoding="utf-8") as fh:
        for s in limit_samples(task.load(data), limit):
            targets = s.target if isinstance(s.target, list) else [s.target]
            row = {
                "id": s.id,
                "prompt": s.prompt,
                "images": _image_paths(s, folder),
                "targets": [str(t) for t in targets],
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (folder / f"{name}.yaml").write_text(_yaml(name, questions, task.max_new_tokens), encoding="utf-8")
    (folder / f"{UTILS_MODULE}.py").write_text(_UTILS, encoding="utf-8")
    return name


def read_lmms_answers(output_path: str | Path, name: str) -> list[str]:
    """The answers of lmms-eval's newest run of task ``name`` under ``output_path`` (its ``--output_path``, run
    with ``--log_samples``), in question order."""
    files = sorted(Path(output_path).rglob(f"*_samples_{name}.jsonl"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise VlmforgeError(f"no lmms-eval samples of task {name} under {output_path} (run it with --log_samples)")
    rows = [json.loads(line) for line in files[-1].read_text(encoding="utf-8").splitlines() if line.strip()]
    rows.sort(key=lambda r: r["doc_id"])
    return [r["filtered_resps"][0] if isinstance(r["filtered_resps"], list) else r["filtered_resps"] for r in rows]
