"""The words a question is asked in: one canonical template per question type, other phrasings for training, and
held-out phrasings that only the test split's ``paraphrased`` records use.

A frame is a format string over the question's slots (``{x}`` the object's name, ``{a_x}`` with its article,
``{things}`` what is counted, ``{colour}`` the spelling of the word). The questions of ``train/instruct_phrased`` are
asked in the canonical template with probability ``1 - WorldConfig.paraphrase`` and otherwise in a frame drawn from
``TRAIN``, in either
spelling, with or without the short-answer suffix: a model that only ever saw one template with one suffix learns
the suffix as the sign of a short answer and answers a plain question in the format of the questions without it
(the boxes). ``HELD_OUT`` frames never occur in training records, so the ``paraphrased`` test records measure
whether a model reads the question rather than recognising the template.
"""

from __future__ import annotations

import random

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."

# The first frame of each type is the canonical template the test split's ``instruct`` records are asked in.
TRAIN: dict[str, tuple[str, ...]] = {
    "color": (
        "What {colour} is the {x}?",
        "Which {colour} is the {x}?",
        "What is the {colour} of the {x}?",
        "What {colour} is the {x} in the image?",
    ),
    "shape": (
        "What shape is the {x}?",
        "Which shape is the {x}?",
        "What is the shape of the {x}?",
        "What kind of shape is the {x}?",
    ),
    "count": (
        "How many {things} are there?",
        "How many {things} can you see?",
        "How many {things} are in the image?",
        "How many {things} are in the picture?",
    ),
    "position": (
        "Where is the {x}?",
        "Where is the {x} located?",
        "Where is the {x} in the image?",
        "In which part of the image is the {x}?",
    ),
    "exist": (
        "Is there {a_x} in the image?",
        "Is there {a_x} in the picture?",
        "Can you see {a_x}?",
        "Does the image contain {a_x}?",
    ),
    "rec": (
        "Give the bounding box of the {x}.",
        "What is the bounding box of the {x}?",
        "Provide the bounding box of the {x}.",
    ),
}
# New combinations of the words and parts of the training frames: the tiny foundation LM knows no English beyond
# the world's own text and these frames, so a word it never read (e.g. "number", "placed") is noise to it, not a
# paraphrase.
HELD_OUT: dict[str, tuple[str, ...]] = {
    "color": ("Which {colour} is the {x} in the image?", "What is the {colour} of the {x} in the picture?"),
    "shape": ("Which shape is the {x} in the image?", "What kind of shape is the {x} in the picture?"),
    "count": ("How many {things} can you see in the image?", "How many {things} are there in the picture?"),
    "position": ("Where is the {x} in the picture?", "Where is the {x} located in the image?"),
    "exist": ("Does the picture contain {a_x}?", "Can you see {a_x} in the picture?"),
}
# Types whose canonical template ends with ``SHORT_ANSWER`` (rec asks for a box, mc for a letter).
SHORT_ANSWER_TASKS = ("color", "shape", "count", "position", "exist")
SPELLINGS = ("colour", "color")


def canonical(task: str, slots: dict[str, str], suffix: bool = True) -> str:
    """The question in its type's canonical template, with the short-answer suffix where the type has one (and
    ``suffix`` asks for it: a multiple-choice question line has its own closing line instead)."""
    end = SHORT_ANSWER if suffix and task in SHORT_ANSWER_TASKS else ""
    return TRAIN[task][0].format(colour="colour", **slots) + end


def _fill(frame: str, slots: dict[str, str], rng: random.Random, suffix: bool) -> str:
    words = dict(slots)
    if words.get("things") == "objects" and rng.random() < 0.5:
        words["things"] = "shapes"  # people say "shapes" for all of them as often as "objects"
    text = frame.format(colour=rng.choice(SPELLINGS), **words)
    return text + (SHORT_ANSWER if suffix and rng.random() < 0.5 else "")


def train_phrasing(task: str, slots: dict[str, str], rng: random.Random, share: float) -> str:
    """The question as a training record asks it: canonical with probability ``1 - share``, else a ``TRAIN`` frame
    in either spelling, with the short-answer suffix half of the time (where the type has one)."""
    if rng.random() >= share:
        return canonical(task, slots)
    return _fill(rng.choice(TRAIN[task]), slots, rng, task in SHORT_ANSWER_TASKS)


def held_out_phrasing(task: str, slots: dict[str, str], rng: random.Random) -> str:
    """The question in one of its type's ``HELD_OUT`` frames (never used in training records)."""
    return _fill(rng.choice(HELD_OUT[task]), slots, rng, True)
