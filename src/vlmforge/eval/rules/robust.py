"""The rules of ``--scoring robust``: each reference's parsing with its plain bugs fixed, so that an answer that
states yes, no or an option unambiguously is read as it states it. docs/evaluation.md lists each change."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

from vlmforge.eval.rules import lmms, vlmevalkit


def _words(text: str) -> list[str]:
    """Whitespace-separated words, lower-cased, with punctuation stripped from both ends."""
    return [w for w in (w.strip(string.punctuation).lower() for w in text.split()) if w]


_YES_NO_WORDS = {"yes": "yes", "y": "yes", "yeah": "yes", "yep": "yes", "no": "no", "n": "no", "nope": "no",
                 "nah": "no"}  # fmt: skip


def first_word_yes_no(text: str) -> str:
    """MME: the first word, whatever its case and punctuation, when it says yes or no (y, yep, nope...); else
    "other" ("Not sure", "None" and "yesterday" say neither)."""
    words = _words(text)
    return _YES_NO_WORDS.get(words[0], "other") if words else "other"


def pope_yes_no(text: str) -> str:
    """POPE: "no" when the first sentence holds the word no or not in any case and punctuation; else "yes"."""
    return "no" if {"no", "not"} & set(_words(text.split(".")[0])) else "yes"


_SCIENCEQA_ANSWER_IS = re.compile(r"The answer is \(?([A-Z])\)?(?![A-Za-z0-9])")


def scienceqa_letter(text: str, letters: Sequence[str]) -> str | None:
    """ScienceQA: the stripped answer as a letter (optionally "X." or "(X)"), an "X. " prefix, or the one "The
    answer is X" whose letter stands alone ("The answer is CAT" names no letter)."""
    text = text.strip()
    bare = text.strip("().")
    if bare in letters:
        return bare
    if len(text) >= 3 and text[0] in letters and text[1:3] == ". ":
        return text[0]
    found = _SCIENCEQA_ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else None


def can_infer(answer: str, choices: Mapping[str, str]) -> str | None:
    """Multiple choice: VLMEvalKit's matching, where a lone letter counts in either case ("b", "(b)") and
    "answer is X" reads every option letter, not only A-D."""
    lone = vlmevalkit.tokens(answer)
    if len(lone) == 1 and lone[0].upper() in choices and len(lone[0]) == 1:
        return lone[0].upper()
    pattern = vlmevalkit.answer_is_pattern("".join(choices) or vlmevalkit.ANSWER_IS_LETTERS)
    return vlmevalkit.infer_letter(answer, choices, pattern) or vlmevalkit.infer_text(answer, choices)


def yes_no_unknown(answer: str) -> str:
    """VLMEvalKit yes/no: an answer that starts with yes or no says so ("Yes, there is no dog" is Yes); else the
    reference's rule."""
    word = first_word_yes_no(answer)
    return word.capitalize() if word != "other" else vlmevalkit.yes_no_unknown(answer)


def vqa_accuracy(parsed: str, answers: Sequence[str]) -> float:
    """VQAv2: with a single reference answer a plain match (the reference leaves it no other annotator: 0)."""
    return float(parsed == answers[0]) if len(answers) == 1 else lmms.vqa_accuracy(parsed, answers)
