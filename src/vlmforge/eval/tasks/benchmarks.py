"""Standard benchmarks from the files their authors release (no network): MME, POPE, GQA, VQAv2, ScienceQA-IMG,
LLaVA-style question/answer JSONL (a user's own records: tasks/jsonl.py)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from vlmforge.errors import DataError
from vlmforge.eval import scorers as sc
from vlmforge.eval import yesno as yn
from vlmforge.eval.tasks import register
from vlmforge.eval.tasks.common import (
    SHORT_ANSWER,
    data_path,
    mc_samples,
    read_json,
    read_json_records,
    read_jsonl,
    require,
)  # fmt: skip
from vlmforge.eval.types import Sample, Task, check_image

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG")


def _short(question: str) -> str:
    return f"{question.strip()}\n{SHORT_ANSWER}"


# ---- MME ----
def _mme_image(folder: Path, stem: str, where: str) -> Path:
    for base in (folder / "images", folder):
        for suffix in ("", *IMAGE_SUFFIXES):
            if (base / f"{stem}{suffix}").is_file():
                return base / f"{stem}{suffix}"
    raise DataError(where, f"image {stem} not found in {folder}", "missing_image")


def _mme_lines(path: Path):
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            yield f"{path}:{i}", line.rstrip("\r").split("\t")


def load_mme(data: Mapping[str, str]) -> list[Sample]:
    """MME_Benchmark_release_version: per subtask either ``images/`` + ``questions_answers_YN/<img>.txt``, image
    files with a same-named ``.txt`` beside them, or one ``<subtask>.txt`` of ``image\\tquestion\\tanswer`` lines
    (in the root or the subtask folder)."""
    root = data_path(data, "mme", "mme")
    out: list[Sample] = []

    def add(sub: str, image: Path, question: str, answer: str, where: str, k: int) -> None:
        out.append(Sample(id=f"{sub}/{image.name}/{k}", prompt=_short(question), target=answer.strip().lower(),
                          images=[str(image)], where=where, meta={"subtask": sub, "image": image.name}))  # fmt: skip

    for sub in (*yn.MME_PERCEPTION, *yn.MME_COGNITION):
        folder = root / sub
        flat = next((p for p in (root / f"{sub}.txt", folder / f"{sub}.txt") if p.is_file()), None)
        if flat is not None:
            counts: dict[str, int] = {}
            for where, fields in _mme_lines(flat):
                if len(fields) != 3:
                    raise DataError(where, f"expected image<TAB>question<TAB>answer, got {len(fields)} fields")
                image = _mme_image(folder if folder.is_dir() else root, Path(fields[0]).stem, where)
                counts[image.name] = counts.get(image.name, 0) + 1
                add(sub, image, fields[1], fields[2], where, counts[image.name])
            continue
        qa_dir = folder / "questions_answers_YN"
        txts = sorted(qa_dir.glob("*.txt")) if qa_dir.is_dir() else sorted(folder.glob("*.txt"))
        for txt in txts:
            image = None
            for k, (where, fields) in enumerate(_mme_lines(txt), 1):
                if len(fields) != 2:
                    raise DataError(where, f"expected question<TAB>answer, got {len(fields)} fields")
                image = image or _mme_image(folder, txt.stem, where)
                add(sub, image, fields[0], fields[1], where, k)
    if not out:
        raise DataError(str(root), "no MME subtask folders or <subtask>.txt files found", "missing_file")
    return out


# ---- POPE ----
POPE_SPLITS = ("random", "popular", "adversarial")


def load_pope(data: Mapping[str, str]) -> list[Sample]:
    """``coco_pope_{random,popular,adversarial}.json`` (JSONL: question_id, image, text, label) in the folder
    ``pope`` (or one such file), images in ``pope_images`` (COCO val2014)."""
    src = data_path(data, "pope", "pope")
    images = data_path(data, "pope_images", "pope", default=src if src.is_dir() else src.parent)
    files = [src] if src.is_file() else [src / f"coco_pope_{s}.json" for s in POPE_SPLITS]
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(str(src), "no coco_pope_{random,popular,adversarial}.json files found", "missing_file")
    out = []
    for file in files:
        split = next((s for s in POPE_SPLITS if s in file.stem), file.stem)
        for where, r in read_json_records(file):
            require(r, ("question_id", "image", "text", "label"), where)
            out.append(Sample(id=f"{split}/{r['question_id']}", prompt=_short(r["text"]),
                              target=str(r["label"]).strip().lower(), where=where, meta={"split": split},
                              images=[check_image(images / r["image"], where)]))  # fmt: skip
    return out


# ---- GQA ----
def load_gqa(data: Mapping[str, str]) -> list[Sample]:
    """``testdev_balanced_questions.json`` ({qid: {imageId, question, answer, types}}); images in gqa_images."""
    file = data_path(data, "gqa", "gqa")
    images = data_path(data, "gqa_images", "gqa", default=file.parent / "images")
    questions = read_json(file)
    if not isinstance(questions, dict):
        raise DataError(str(file), "expected a JSON object {question_id: question}")
    out = []
    for qid, q in questions.items():
        where = f"{file}:{qid}"
        require(q, ("imageId", "question", "answer"), where)
        kind = (q.get("types") or {}).get("structural")
        out.append(
            Sample(
                id=str(qid),
                prompt=_short(q["question"]),
                target=q["answer"],
                where=where,
                images=[check_image(images / f"{q['imageId']}.jpg", where)],
                meta={"type": kind},
            )
        )
    return out


# ---- VQAv2 ----
def load_vqav2(data: Mapping[str, str]) -> list[Sample]:
    """Official ``v2_OpenEnded_mscoco_*_questions.json`` + ``v2_mscoco_*_annotations.json``; images in
    vqav2_images (any COCO file name ending in the 12-digit image id)."""
    qfile = data_path(data, "vqav2_questions", "vqav2")
    afile = data_path(data, "vqav2_annotations", "vqav2")
    folder = data_path(data, "vqav2_images", "vqav2", default=qfile.parent)
    by_id = {p.stem[-12:]: p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES}
    answers = {}
    for i, a in enumerate(read_json(afile).get("annotations", [])):
        require(a, ("question_id", "answers"), f"{afile}:annotation {i}")
        answers[a["question_id"]] = a
    out = []
    for i, q in enumerate(read_json(qfile).get("questions", [])):
        where = f"{qfile}:question {i}"
        require(q, ("question_id", "image_id", "question"), where)
        ann = answers.get(q["question_id"])
        if ann is None:
            raise DataError(where, f"question {q['question_id']} has no annotation in {afile}", "missing_answer")
        image = by_id.get(f"{int(q['image_id']):012d}")
        if image is None:
            raise DataError(where, f"image {q['image_id']} not found in {folder}", "missing_image")
        out.append(Sample(id=str(q["question_id"]), prompt=_short(q["question"]), where=where,
                          target=[a["answer"] for a in ann["answers"]], images=[str(image)],
                          meta={"type": ann.get("answer_type")}))  # fmt: skip
    return out


# ---- ScienceQA-IMG ----
def load_scienceqa(data: Mapping[str, str]) -> list[Sample]:
    """``problems.json`` + ``pid_splits.json`` (test split, questions with an image); images/test/<pid>/image.png."""
    file = data_path(data, "scienceqa", "scienceqa")
    splits = data_path(data, "scienceqa_splits", "scienceqa", default=file.parent / "pid_splits.json")
    images = data_path(data, "scienceqa_images", "scienceqa", default=file.parent / "images")
    split = data.get("scienceqa_split", "test")
    problems = read_json(file)
    out = []
    for pid in read_json(splits).get(split, []):
        where = f"{file}:{pid}"
        p = problems.get(str(pid))
        if p is None:
            raise DataError(where, f"pid listed in {splits} is missing from problems.json", "missing_record")
        if not p.get("image"):
            continue  # ScienceQA-IMG: only questions with an image
        require(p, ("question", "choices", "answer"), where)
        image = check_image(images / split / str(pid) / p["image"], where)
        hint = f"Context: {p['hint']}" if p.get("hint") else None
        out.extend(
            mc_samples(
                str(pid),
                p["question"],
                p["choices"],
                int(p["answer"]),
                circular=False,
                images=[image],
                where=where,
                meta={"type": p.get("subject")},
                hint=hint,
            )
        )
    return out


# ---- LLaVA question JSONL + answers ----
def load_llava_questions(data: Mapping[str, str]) -> list[Sample]:
    """LLaVA eval question JSONL (question_id, image, text[, category]) + an answers file: JSONL of
    {question_id, answer | answers | text} or a JSON {question_id: answer}. Images in llava_images."""
    qfile = data_path(data, "llava_questions", "llava_qa")
    afile = data_path(data, "llava_answers", "llava_qa")
    images = data_path(data, "llava_images", "llava_qa", default=qfile.parent)
    if afile.read_text(encoding="utf-8").lstrip().startswith("{") and afile.suffix == ".json":
        gold = {str(k): v for k, v in read_json(afile).items()}
    else:
        gold = {}
        for where, r in read_jsonl(afile):
            require(r, ("question_id",), where)
            gold[str(r["question_id"])] = next((r[k] for k in ("answers", "answer", "text") if k in r), None)
    out = []
    for where, r in read_jsonl(qfile):
        require(r, ("question_id", "text"), where)
        qid = str(r["question_id"])
        if gold.get(qid) in (None, ""):
            raise DataError(where, f"question {qid} has no answer in {afile}", "missing_answer")
        imgs = [check_image(images / r["image"], where)] if r.get("image") else []
        out.append(Sample(id=qid, prompt=str(r["text"]).replace("<image>", "").strip(), target=gold[qid],
                          images=imgs, where=where, meta={"type": r.get("category")}))  # fmt: skip
    return out


_T = functools.partial(Task, max_new_tokens=16)
register(_T(name="mme", description="MME yes/no (lmms-eval's parsing): per-subtask acc + acc+ (max 200); perception "
            "/ cognition sums.", data_keys=("mme",), load=load_mme, parse=yn.MME.parse, judge=yn.MME.judge,
            score=yn.MME.score, robust=yn.MME_ROBUST, primary="perception"))  # fmt: skip
register(_T(name="pope", description="POPE object hallucination (LLaVA's parsing): accuracy, precision, recall, F1, "
            "yes-ratio per split and averaged.", data_keys=("pope", "pope_images"), load=load_pope,
            parse=yn.POPE.parse, judge=yn.POPE.judge, score=yn.POPE.score, robust=yn.POPE_ROBUST, primary="f1",
            chance=0.5))  # fmt: skip
register(_T(name="gqa", description="GQA testdev-balanced (lmms-eval): exact match ignoring case and punctuation.",
            data_keys=("gqa", "gqa_images"), load=load_gqa, parse=sc.parse_gqa, judge=sc.judge_gqa,
            score=sc.gqa_scores))  # fmt: skip
register(_T(name="vqav2", description="VQAv2 (lmms-eval): min(#annotators/3, 1) averaged over the 10-choose-9 "
            "subsets.", data_keys=("vqav2_questions", "vqav2_annotations", "vqav2_images"), load=load_vqav2,
            parse=sc.VQAV2.parse, judge=sc.VQAV2.judge, score=sc.VQAV2.score, robust=sc.VQAV2_ROBUST))  # fmt: skip
register(_T(name="scienceqa_img", description="ScienceQA-IMG test (LLaVA's parsing): option letter (bare, 'X. ' or "
            "'The answer is X'); unparseable is wrong.",
            data_keys=("scienceqa", "scienceqa_splits", "scienceqa_images",
            "scienceqa_split"),
            load=load_scienceqa, parse=sc.parse_scienceqa, judge=sc.judge_equal, score=sc.scienceqa_scores,
            robust=sc.SCIENCEQA_ROBUST, max_new_tokens=8))  # fmt: skip
register(_T(name="llava_qa", description="LLaVA-style question JSONL + answer file: normalised match.",
            data_keys=("llava_questions", "llava_answers", "llava_images"), load=load_llava_questions,
            parse=sc.parse_vqa, judge=sc.judge_normalized, score=sc.normalized_match_scores,
            robust=sc.NORMALIZED_ROBUST))  # fmt: skip
