"""The LLaVA / Bunny evaluation scripts' parsing: POPE (``eval_pope.py``) and ScienceQA (``eval_science_qa.py``).
The scripts read the text as the generation script wrote it, without stripping it again."""

from __future__ import annotations

import re

SCIENCEQA_OPTIONS = ("A", "B", "C", "D", "E")
# The script's pattern leaves the final dot unescaped, so any character may follow the letter.
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def pope_yes_no(text: str) -> str:
    """No when the first sentence, commas removed and split on single spaces, has the word "No", "no" or "not"
    (case-sensitive: "NO" and "no!" are yes); else yes. Returns "yes" or "no"."""
    first = text.split(".")[0] if "." in text else text
    words = first.replace(",", "").split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def scienceqa_letter(text: str) -> str | None:
    """The letter the script reads: the whole answer as A-E, an "X. " prefix, or the one "The answer is X" that
    the text holds; None when none (or several) match. A letter beyond the question's options counts as wrong."""
    if text in SCIENCEQA_OPTIONS:
        return text
    if len(text) >= 3 and text[0] in SCIENCEQA_OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else None
