"""Seeded messy answers, as real models give them, for the parity tests (test_eval_parity_*.py).

Plain answers mixed with case changes, punctuation, refusals, hedges, letters inside words, numbers written out,
"answer is" sentences, stray whitespace and empty strings. The fixtures under tests/fixtures/eval_parity were made
from these same functions (each fixture names its seed), so the generator and the fixtures must not drift apart:
tests check that regenerating gives the fixture's predictions.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

_CASES = (str, str.lower, str.upper, str.title, str.capitalize)
_WRAP_PREFIX = ("", "", "", " ", "I think ", "The answer is ", "Answer: ", "Hmm, ", "Well. ", "\n", "Maybe ",
                "Sorry, I can't help with images of people yet. ", "**")  # fmt: skip
_WRAP_SUFFIX = ("", "", "", ".", "!", ",", ";", " ", "\n", ".\n", "**", " because it is clear.", "?",
                ", I guess", ". No.", ". Yes.")  # fmt: skip

YES_NO_CORES = (
    "Yes", "No", "yes", "no", "YES", "NO", "y", "n", "Y.", "N", "Not sure", "None", "nope", "Nope", "yesterday",
    "Nothing", "No, there is not", "Yes, there is", "There is no dog", "There is not a dog", "I don't know", "",
    "Maybe", "Not really. Yes", "Yes. No", "Absolutely not", "Unknown", "noo", "Noting", "yes no",
    "Yes, there is no dog", "No\nthere is one", "no!", "No;", "Not", "Yes, not a cat but a dog", "Notably yes",
    "It is not possible to tell", "Cannot determine the answer", "Yes.\nNo.", "nah", "Yep", "Is there? No",
)  # fmt: skip

WORD_CORES = (
    "two", "Two.", "2", "eleven", "11", "twenty", "three", "none", "zero", "ten", "1,000", "1000", "1,,000",
    "a dog", "The cat", "cat", "dog", "an apple!", "apple", "dont", "don't", "black-and-white", "black and white",
    "T-shirt", "tshirt", "yes", "Yes.", "no", "left", " left ", "right", "top-left", "top left", "3.5", "3. 5",
    "red", "Red", "RED", "red.", "the red one", "İstanbul", "istanbul", "right\x00", "", " ", "I don't know",
    "It is red.", "a." * 40, "y'all", "yall", "10:30", "Mr. Smith", "e.g. red", "red;blue", "red / blue",
    "(red)", "[2]", "red\tblue", "naïve", "2 dogs", "two dogs", "The answer is 2.",
)  # fmt: skip


def _decorate(rng: random.Random, core: str) -> str:
    case = rng.choice(_CASES) if rng.random() < 0.3 else str
    return rng.choice(_WRAP_PREFIX) + case(core) + rng.choice(_WRAP_SUFFIX) if rng.random() < 0.5 else case(core)


def yes_no_answers(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [_decorate(rng, rng.choice(YES_NO_CORES)) for _ in range(n)]


def word_answers(seed: int, n: int, targets: Sequence[str] = ()) -> list[str]:
    """Messy short answers; half of them built around the given targets (so that some are right)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        core = targets[i] if targets and rng.random() < 0.5 else rng.choice(WORD_CORES)
        out.append(_decorate(rng, core))
    return out


def _letter_answer(rng: random.Random, choices: Mapping[str, str], answer: str) -> str:
    letters = list(choices)
    letter = answer if rng.random() < 0.5 else rng.choice([*letters, "E", "Z"])
    text = choices.get(letter, "something else")
    other = rng.choice(letters)
    templates = (
        letter, letter.lower(), f"({letter})", f"{letter}.", f"{letter}. {text}", f"The answer is {letter}.",
        f"The answer is {letter}!", f"The answer is {letter}", f"The answer is {letter}{text[:3]}",
        f"Answer: {letter}", f"the correct answer is **{letter.lower()}** since {text} matches the picture well",
        f"{letter} is correct because the picture clearly shows {text} in the middle of it", text, text.lower(),
        f"It is {text}.", f"{text} or {choices[other]}", f"{letter} or {other}", f"Option {letter}", f" {letter}",
        f"{letter}\n", "", " ", "I cannot tell from this image.", "Cannot determine the answer", "Z", "None",
        f"It could be {letter} or maybe {other}", f"Apple Banana {letter}at", f"**{letter}**",
        f"I think the answer is {letter} because {text} is there and nothing else is visible at all.",
        f"{letter}) {text}", f"[{letter}]", f"{letter}:", "A", "I'm sorry, but without the image provided",
        f"{text}. The answer is {letter}.", f"The answer is {letter}. The answer is {other}.",
    )  # fmt: skip
    return rng.choice(templates)


def letter_answers(seed: int, questions: Sequence[tuple[Mapping[str, str], str]]) -> list[str]:
    """One messy answer per (choices, answer letter) question."""
    rng = random.Random(seed)
    return [_letter_answer(rng, choices, answer) for choices, answer in questions]
