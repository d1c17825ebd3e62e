"""lmms-eval's answer parsing: MME's yes/no (``tasks/mme/utils.py``), GQA's exact match (the ``exact_match``
metric with ``ignore_case`` and ``ignore_punctuation``, ``api/metrics.py``) and VQAv2's accuracy
(``tasks/vqav2/utils.py``)."""

from __future__ import annotations

import string
from collections.abc import Sequence

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def mme_yes_no(text: str) -> str:
    """The whole answer when it is yes/no (or y/n), else whichever of the two shows within its first four
    characters ("Not sure" is no, "yesterday" is yes), after lower-casing and deleting periods; else "other"."""
    answer = text.lower().strip().replace(".", "")
    if answer in ("yes", "no"):
        return answer
    if len(answer) == 1:
        return {"y": "yes", "n": "no"}.get(answer, "other")
    head = answer[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def _numpy_str(text: str, width: int) -> str:
    # The metric works on numpy string arrays: those have a fixed width (lower-casing that lengthens a string is
    # cut back to it) and drop trailing NUL characters.
    return text[:width].rstrip("\x00")


def exact_match_form(text: str) -> str:
    """A string as lmms-eval's exact match compares it: lower-cased, then every ASCII punctuation mark deleted."""
    width = len(text)
    lowered = _numpy_str(_numpy_str(text, width).lower(), width)
    return lowered.translate(_NO_PUNCTUATION).rstrip("\x00")


def gqa_parse(raw: str) -> str:
    """The prediction side of GQA's exact match: the generated text is stripped first."""
    return exact_match_form(raw.strip())


def vqa_accuracy(parsed: str, answers: Sequence[str]) -> float:
    """Mean over the annotators of min(#other annotators giving ``parsed`` / 3, 1); both sides normalised."""
    accs = [min(1.0, sum(a == parsed for a in answers[:i] + answers[i + 1 :]) / 3) for i in range(len(answers))]
    return sum(accs) / len(accs) if accs else 0.0
