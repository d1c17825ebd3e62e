"""Parse and validate the QA JSON an LLM writes in stage 2, and turn it into a LLaVA conversation.

LLM output is untrusted text: it may be wrapped in prose or code fences, have the wrong shape, or repeat
itself. ``parse_qa`` either returns clean pairs or raises ``QAError`` with a short ``reason`` that the stage
counts (``no_json``, ``bad_json``, ``bad_schema``, ``empty_field``, ``bad_options``, ``bad_answer``,
``too_few_pairs``).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from vlmforge.synth.unicorn.prompts import MC_SUFFIX, TASK_KINDS

IMAGE_TOKEN = "<image>"
LETTERS = ("A", "B", "C", "D")
_LETTER = re.compile(r"^\(?([ABCD])(?:[).:\s]|$)")


class QAError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


def _extract_json(text: str) -> Any:
    """The first JSON object/array in ``text`` (skips prose and ```json fences around it)."""
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        raise QAError("no_json")
    try:
        value, _ = json.JSONDecoder().raw_decode(text, min(starts))
    except json.JSONDecodeError as err:
        raise QAError("bad_json", err.msg) from err
    return value


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower().rstrip("?.! ")


def _clean_options(raw: Any) -> dict[str, str]:
    if isinstance(raw, list) and len(raw) == 4:
        raw = dict(zip(LETTERS, raw, strict=True))
    if not isinstance(raw, dict) or sorted(raw) != list(LETTERS):
        raise QAError("bad_options", "need exactly the options A, B, C, D")
    options = {k: str(raw[k]).strip() for k in LETTERS}
    if any(not v for v in options.values()) or len({_norm(v) for v in options.values()}) != 4:
        raise QAError("bad_options", "options must be non-empty and distinct")
    return options


def parse_qa(text: str, kind: str, *, min_pairs: int = 6, max_pairs: int = 8) -> list[dict[str, Any]]:
    """Validated pairs ``{"question", "answer"[, "options"]}``; duplicates dropped, at most ``max_pairs`` kept."""
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r}")
    data = _extract_json(text)
    items = data.get("qa") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise QAError("bad_schema", 'expected {"qa": [{"question": ..., "answer": ...}, ...]}')
    pairs, seen = [], set()
    for item in items:
        q, a = item.get("question"), item.get("answer")
        if not isinstance(q, str) or not isinstance(a, str | int) or not q.strip() or not str(a).strip():
            raise QAError("empty_field", "every pair needs a non-empty question and answer")
        pair: dict[str, Any] = {"question": q.strip(), "answer": str(a).strip()}
        if kind == "multiple_choice":
            pair["options"] = _clean_options(item.get("options"))
            m = _LETTER.match(pair["answer"])
            if not m:
                raise QAError("bad_answer", f"answer {pair['answer']!r} is not an option letter A-D")
            pair["answer"] = m.group(1)
        if _norm(q) in seen:  # LLMs repeat themselves; a repeated question teaches nothing new
            continue
        seen.add(_norm(q))
        pairs.append(pair)
    if len(pairs) < min_pairs:
        raise QAError("too_few_pairs", f"{len(pairs)} distinct pairs, need {min_pairs}")
    return pairs[:max_pairs]


def to_conversations(pairs: list[dict[str, Any]], kind: str) -> list[dict[str, str]]:
    """Multi-turn LLaVA conversation; ``<image>`` opens the first human turn (the embedding fills it)."""
    turns = []
    for i, pair in enumerate(pairs):
        question = pair["question"]
        if kind == "multiple_choice":
            options = "\n".join(f"{k}. {pair['options'][k]}" for k in LETTERS)
            question = f"{question}\n{options}\n{MC_SUFFIX}"
        if i == 0:
            question = f"{IMAGE_TOKEN}\n{question}"
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": pair["answer"]}]
    return turns


def assign_kind(record_id: str, ratios: dict[str, float]) -> str:
    """Deterministic task kind for a caption: a hash of its id picks a bucket proportional to ``ratios``, so the
    assignment survives reruns, resumes and sharding."""
    total = sum(ratios.values())
    if total <= 0 or any(v < 0 for v in ratios.values()) or not set(ratios) <= set(TASK_KINDS):
        raise ValueError(f"bad kind ratios {ratios}; kinds are {TASK_KINDS}")
    u = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big") / 2**64
    acc = 0.0
    for kind in TASK_KINDS:
        acc += ratios.get(kind, 0.0) / total
        if u < acc:
            return kind
    return next(k for k in reversed(TASK_KINDS) if ratios.get(k, 0) > 0)


def parse_ratios(text: str) -> dict[str, float]:
    """``"multiple_choice=171,open_qa=199,complex_reasoning=100"`` -> dict (CLI flag)."""
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        out[name.strip()] = float(value)
    return out
