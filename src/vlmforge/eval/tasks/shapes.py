"""Tasks on the embedded shapes world: WORLD/{split}/instruct.jsonl, one question per LLaVA record.

Records carry ``task`` (color|shape|count|position|exist|mc|rec), ``answer``, ``choices`` (mc: the option texts,
answer is a letter) and ``boxes`` (rec: normalised [x1, y1, x2, y2]). Images are relative to WORLD.
Pass ``--data world=WORLD`` (and optionally ``world_split=test``, the default). The ``shapes_paraphrased_*`` tasks
read WORLD/{split}/paraphrased.jsonl instead: the same test questions asked in phrasings no training record uses.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlmforge.errors import DataError
from vlmforge.eval import scorers as sc
from vlmforge.eval import yesno as yn
from vlmforge.eval.tasks import register, register_group
from vlmforge.eval.tasks.common import data_path, mc_samples, read_json, read_jsonl
from vlmforge.eval.types import Sample, Scoring, Task, check_image
from vlmforge.geometry import LETTERS

DEFAULT_CHANCE = {"color": 1 / 6, "shape": 1 / 6, "count": 1 / 4, "position": 1 / 9, "exist": 0.5, "mc": 0.25**4}
# How world.json may name its vocabularies, when it has no explicit chance table.
_VOCAB_NAMES = {"color": ("colors", "colours", "color_names"), "shape": ("shapes", "shape_names", "kinds")}
_OPTION_LINE = re.compile(r"^\s*\(?[A-J][.):]\s")


def _instruct_file(data: Mapping[str, str], task: str, name: str = "instruct") -> tuple[Path, Path]:
    """(NAME.jsonl, WORLD root). ``world`` may be the world folder, a split folder or a JSONL file of the split
    (then NAME.jsonl is looked for beside it)."""
    path = data_path(data, "world", task)
    split = data.get("world_split", "test")
    file = f"{name}.jsonl"
    if path.is_file():
        if path.name == file or name == "instruct":
            return path, path.parent.parent
        path = path.parent
    if (path / split / file).is_file():
        return path / split / file, path
    if (path / file).is_file():
        return path / file, path.parent
    hint = " (a world built before held-out phrasings existed: rebuild it)" if name != "instruct" else ""
    raise DataError(str(path), f"no {split}/{file} in the shapes world folder{hint}", "missing_file")


@functools.lru_cache(maxsize=4)
def _records(file: str, mtime: float) -> tuple[tuple[str, dict[str, Any]], ...]:
    # Cached so that the `shapes` group reads the file once for its seven tasks.
    return tuple(read_jsonl(Path(file)))


def _question(record: Mapping[str, Any], where: str) -> str:
    for turn in record.get("conversations") or []:
        if turn.get("from") == "human":
            return str(turn.get("value", "")).replace("<image>", "").strip()
    raise DataError(where, "record has no human turn", "missing_field")


def _answer(record: Mapping[str, Any], where: str) -> Any:
    if record.get("answer") not in (None, ""):
        return record["answer"]
    for turn in record.get("conversations") or []:
        if turn.get("from") == "gpt":
            return str(turn.get("value", "")).strip()
    raise DataError(where, "record has no answer", "missing_field")


def _image(record: Mapping[str, Any], root: Path, file: Path, where: str) -> list[str]:
    if not record.get("image"):
        return []
    rel = Path(record["image"])
    for base in (root, file.parent):  # relative to WORLD, tolerating paths relative to the split folder
        if (base / rel).is_file():
            return [str(base / rel)]
    return [check_image(root / rel, where)]


def _mc(record: dict, question: str, images: list[str], where: str) -> list[Sample]:
    texts = [str(c) for c in record.get("choices") or []]
    answer = str(record.get("answer", "")).strip()
    if len(texts) < 2:
        raise DataError(where, "mc record needs at least two `choices`", "missing_field")
    if answer in LETTERS[: len(texts)]:
        index = LETTERS.index(answer)
    elif answer in texts:
        index = texts.index(answer)
    else:
        raise DataError(where, f"mc answer {answer!r} is neither an option letter nor an option text")
    # The question may already list its options; the rotations are rebuilt from `choices`, so drop them.
    stem = "\n".join(
        line for line in question.splitlines() if not _OPTION_LINE.match(line) and not line.startswith("Answer with")
    ).strip()
    return mc_samples(str(record["id"]), stem, texts, index, circular=True, images=images, where=where,
                      meta={"type": record.get("subtask") or "mc"})  # fmt: skip


def load_shapes(kind: str, data: Mapping[str, str], records: str = "instruct") -> list[Sample]:
    """The ``kind`` questions of the world's ``records`` file (instruct, or paraphrased) as samples."""
    prefix = "shapes_" if records == "instruct" else f"shapes_{records}_"
    file, root = _instruct_file(data, f"{prefix}{kind}", records)
    out: list[Sample] = []
    for where, record in _records(str(file), file.stat().st_mtime):
        if record.get("task") != kind:
            continue
        if "id" not in record:
            raise DataError(where, "record has no id", "missing_field")
        question = _question(record, where)
        images = _image(record, root, file, where)
        if kind == "mc":
            out.extend(_mc(record, question, images, where))
            continue
        if kind == "rec":
            boxes = record.get("boxes")
            if not boxes:
                raise DataError(where, "rec record has no `boxes`", "missing_field")
            target: Any = [[float(v) for v in box] for box in boxes]
        else:
            target = str(_answer(record, where)).strip()
        out.append(Sample(id=str(record["id"]), prompt=question, target=target, images=images, where=where,
                          meta={"type": record.get("subtask") or kind}))  # fmt: skip
    return out


def _find_chance(obj: Any, kind: str) -> float | None:
    """Look for a chance level for ``kind`` anywhere in world.json, under any key mentioning "chance"."""
    if not isinstance(obj, dict):
        return None
    for key, value in obj.items():
        if "chance" in str(key).lower() and isinstance(value, dict):
            for name in (kind, f"shapes_{kind}"):
                if isinstance(value.get(name), int | float):
                    return float(value[name])
        if key in (kind, f"shapes_{kind}") and isinstance(value, dict):
            for k, v in value.items():
                if "chance" in str(k).lower() and isinstance(v, int | float):
                    return float(v)
        if isinstance(value, dict):
            found = _find_chance(value, kind)
            if found is not None:
                return found
    return None


def world_chance(kind: str, data: Mapping[str, str]) -> float | None:
    """Chance level from WORLD/world.json (explicit table, or 1/len(vocabulary)); None to use the default."""
    try:
        _, root = _instruct_file(data, f"shapes_{kind}")
    except Exception:  # noqa: BLE001 - a missing world is reported by the loader, not here
        return None
    meta_file = root / "world.json"
    if not meta_file.is_file():
        return None
    info = read_json(meta_file)
    found = _find_chance(info, kind)
    if found is None and isinstance(info, dict):
        for name in _VOCAB_NAMES.get(kind, ()):
            vocab = info.get(name) or (info.get("config") or {}).get(name)
            if isinstance(vocab, list) and vocab:
                return 1 / len(vocab)
    return found


def circular_chance(per_order: float | None) -> float | None:
    """A uniform guesser's chance under circular evaluation, from its chance on one order of the options.

    The world's tables give the latter (1/options); circular scoring asks once per rotation (one per option) and
    counts the question only if every answer is right, so chance is (1/options) ** options: 0.0039 for 4."""
    if per_order is None or per_order <= 0:
        return per_order
    return per_order ** round(1 / per_order)


def _mc_chance(data: Mapping[str, str]) -> float | None:
    return circular_chance(world_chance("mc", data))


def _task(kind: str, description: str, scoring: Scoring, robust: Scoring | None, primary: str = "accuracy",
          tokens: int = 16, records: str = "instruct") -> Task:  # fmt: skip
    name = f"shapes_{kind}" if records == "instruct" else f"shapes_{records}_{kind}"
    return Task(
        name=name, description=description, data_keys=("world", "world_split"),
        load=functools.partial(load_shapes, kind, records=records), parse=scoring.parse, judge=scoring.judge,
        score=scoring.score, robust=robust, primary=primary,
        chance=DEFAULT_CHANCE.get(kind), max_new_tokens=tokens,
        chance_from_data=_mc_chance if kind == "mc" else functools.partial(world_chance, kind),
    )  # fmt: skip


for _file, _how in (("instruct", ""), ("paraphrased", " Asked in held-out phrasings.")):
    for _kind, _what in (
        ("color", "colour of an object"), ("shape", "shape of an object"), ("count", "number of objects"),
        ("position", "where an object is (3x3 grid)"),
    ):  # fmt: skip
        register(_task(_kind, f"Shapes world: {_what}; exact match after VQA normalisation.{_how}",
                       sc.NORMALIZED, sc.NORMALIZED_ROBUST, records=_file))  # fmt: skip
    register(_task("exist", f"Shapes world: is there a ...? yes/no, POPE metrics.{_how}", yn.POPE, yn.POPE_ROBUST,
                   records=_file))  # fmt: skip
register(_task("mc", "Shapes world: multiple choice, circular evaluation over option rotations.", sc.OPTION,
               sc.OPTION_ROBUST, tokens=8))  # fmt: skip
register(_task("rec", "Shapes world: box of the referred object, Acc@0.5 (IoU >= 0.5).",
               Scoring(sc.parse_rec, sc.judge_rec, sc.rec_scores), None,
               primary="acc@0.5", tokens=32))  # fmt: skip
register_group("shapes", [f"shapes_{k}" for k in ("color", "shape", "count", "position", "exist", "mc", "rec")])
PARAPHRASED_KINDS = ("color", "shape", "count", "position", "exist")
register_group("shapes_paraphrased", [f"shapes_paraphrased_{k}" for k in PARAPHRASED_KINDS])
