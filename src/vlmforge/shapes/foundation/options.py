"""Multiple-choice questions for the reader, with their options drawn afresh for every sample.

Answering one takes two lookups: the answer from the objects (what the other questions teach), then the letter of
the option that names it. The second is an in-context lookup of its own that the tiny LM forms only after many
steps spent on it, and only from options that change from sample to sample: from the records as written it
memorises which letter goes with which question. So each sample here keeps a record's
question and scene, draws three other option texts from those the records offer for the same kind of question, and
shuffles them; a share of the samples also asks the letter lookup alone ("Which option is green?"), whose answer is
named in the text, which is what makes the lookup form at all.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from vlmforge.data.chat import encode_conversation
from vlmforge.errors import DataError
from vlmforge.geometry import LETTERS, options_block
from vlmforge.models.assemble import IMAGE_TOKEN
from vlmforge.shapes.foundation.corpus import read_jsonl

MC_TASK = "mc"


@dataclass
class OptionQuestion:
    """One multiple-choice record split into what stays (scene, question, closing line) and what is drawn."""

    scene: int
    stem: list[str]  # the human turn's lines before the options (the image token's line included)
    closing: list[str]  # its lines after the options ("Answer with the option's letter ...")
    choices: list[str]  # its option texts as written
    answer: str  # the right option's text
    kind: str  # which pool the other options come from: the record's ``subtask`` ("color", "shape")
    image: str


def parse_option_question(record: dict, scene: int, where: str) -> OptionQuestion:
    """Split ``record``'s human turn around its option lines ("A. red", one per ``choices`` entry, in order)."""
    choices, answer = record.get("choices"), record.get("answer")
    if (
        not isinstance(choices, list)
        or not 2 <= len(choices) <= len(LETTERS)
        or not all(isinstance(c, str) for c in choices)
    ):
        raise DataError(where, f"a multiple-choice record needs a list of 2 to {len(LETTERS)} option texts in "
                        "'choices'", "choices")  # fmt: skip
    letters = list(LETTERS[: len(choices)])
    if answer not in letters:
        raise DataError(where, f"answer {answer!r} is not one of the option letters {''.join(letters)}", "answer")
    lines = str(record["conversations"][0]["value"]).split("\n")
    options = options_block(dict(zip(letters, choices, strict=True))).split("\n")
    first = next((i for i in range(len(lines)) if lines[i : i + len(options)] == options), None)
    if first is None:
        raise DataError(where, "the human turn does not list 'choices' as option lines ('A. ...')", "conversations")
    return OptionQuestion(scene, lines[:first], lines[first + len(options) :], choices,
                          choices[letters.index(answer)],
                          str(record.get("subtask") or MC_TASK), str(record.get("image")))  # fmt: skip


def option_questions(world_dir: str | Path, split: str, scene_of: Callable[[dict, str], int]) -> list[OptionQuestion]:
    """The split's multiple-choice records (``task`` "mc"), each with its scene (``scene_of(record, where)``); a
    split without any is a DataError naming its file (whoever asks for them means to teach them)."""
    path = Path(world_dir) / split / "instruct.jsonl"
    found = [
        parse_option_question(record, scene_of(record, where), where)
        for where, record in read_jsonl(path)
        if record.get("task") == MC_TASK
    ]
    if not found:
        raise DataError(str(path), "no multiple-choice records (task 'mc') to teach the option letters from", "mc")
    return found


class OptionSampler:
    """Draws encoded multiple-choice samples with fresh options (see the module doc)."""

    def __init__(self, questions: list[OptionQuestion], tokenizer: PreTrainedTokenizerBase, patches: int,
                 lookup_share: float) -> None:  # fmt: skip
        if not questions:
            raise ValueError("no multiple-choice questions to draw from")
        self.questions, self.tokenizer, self.patches, self.lookup_share = questions, tokenizer, patches, lookup_share
        # Every text the records offer for a kind, in first-seen order so that draws are deterministic.
        self.pools: dict[str, list[str]] = {}
        for q in questions:
            pool = self.pools.setdefault(q.kind, [])
            pool += [text for text in q.choices if text not in pool]

    def draw(self, rng: random.Random) -> tuple[int, list[int], list[int]]:
        """``(scene, input_ids, labels)`` of one sample."""
        q = rng.choice(self.questions)
        others = [text for text in self.pools[q.kind] if text != q.answer]
        texts = [q.answer, *rng.sample(others, min(len(q.choices) - 1, len(others)))]
        rng.shuffle(texts)
        stem = q.stem
        if rng.random() < self.lookup_share:  # the letter lookup alone: the image stays, the question names it
            stem = [line for line in q.stem if IMAGE_TOKEN in line] + [f"Which option is {q.answer}?"]
        human = "\n".join([*stem, options_block(dict(zip(LETTERS, texts, strict=False))), *q.closing])
        record = {"image": q.image, "conversations": [
            {"from": "human", "value": human}, {"from": "gpt", "value": LETTERS[texts.index(q.answer)]}]}  # fmt: skip
        encoded = encode_conversation(record, self.tokenizer, template="chat", image_tokens=self.patches)
        return q.scene, encoded.input_ids, encoded.labels
