"""VLMEvalKit's answer matching (``vlmeval/utils/matching_util.py``: ``can_infer``) and yes/no extraction
(``vlmeval/dataset/utils/yorn.py``: ``YOrN_Extraction``), as its ``exact_matching`` policy (no judge model) runs
them. Choices map option letters to option texts."""

from __future__ import annotations

import re
from collections.abc import Mapping

from vlmforge.eval.normalize import VLMEVALKIT_COMMA, VLMEVALKIT_PERIOD, process_punctuation

# An answer holding one of these is the refusal option "Z", which never matches an answer key.
REFUSALS = (
    "Sorry, I can't help with images of people yet.", "I can't process this file.",
    "I'm sorry, but without the image provided", "Cannot determine the answer",
)  # fmt: skip
_SEPARATORS = ".()[],:;!*#{}"
ANSWER_IS_LETTERS = "ABCD"


def answer_is_pattern(letters: str) -> re.Pattern:
    return re.compile(rf"(?i)(?:correct\s+)?answer\s+is\s+\**([{letters}])\**")


_ANSWER_IS = answer_is_pattern(ANSWER_IS_LETTERS)


def tokens(answer: str) -> list[str]:
    """The answer split on whitespace after the separators ``.()[],:;!*#{}`` become spaces."""
    for ch in _SEPARATORS:
        answer = answer.replace(ch, " ")
    return answer.split()


def infer_letter(answer: str, choices: Mapping[str, str], answer_is: re.Pattern = _ANSWER_IS) -> str | None:
    """The option letter named in ``answer``: the only option letter among its tokens, if it is one of the last
    four; else "Z" for a refusal (or a lone "Z" token); else "answer is X" (X in A-D, any case); else None."""
    if "Failed to obtain answer via API" in answer:
        return None
    if any(refusal in answer for refusal in REFUSALS):
        return "Z"
    words = tokens(answer)
    named = [letter for letter in choices if letter in words]
    if len(named) == 1:
        if words.index(named[0]) > len(words) - 5:
            return named[0]
    elif not named and "Z" in words:
        return "Z"
    match = answer_is.search(answer)
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()
    return None


def infer_text(answer: str, choices: Mapping[str, str]) -> str | None:
    """The only option whose text appears in the answer (case-insensitive), unless the answer is more than twice
    as long as all the option texts together."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    found = [letter for letter, text in choices.items() if str(text).lower() in answer]
    return found[0] if len(found) == 1 else None


def can_infer(answer: str, choices: Mapping[str, str]) -> str | None:
    """The option letter VLMEvalKit reads from ``answer`` ("Z": a refusal), or None: by letter, then by text."""
    return infer_letter(answer, choices) or infer_text(answer, choices)


def yes_no_unknown(answer: str) -> str:
    """Yes when the lower-cased words (punctuation handled as in VQA) hold "yes" and not "no", No for the reverse,
    else Unknown (returned as "Yes", "No", "Unknown")."""
    words = process_punctuation(answer.lower(), VLMEVALKIT_COMMA, VLMEVALKIT_PERIOD).split()
    if "yes" in words and "no" not in words:
        return "Yes"
    if "no" in words and "yes" not in words:
        return "No"
    return "Unknown"
