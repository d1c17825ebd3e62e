"""Can the LM answer from what precedes the question? Measured before any VLM is trained on it.

Two tests. ``object_reading_accuracy`` asks held-out scenes' questions with their object vectors in the image's
place: the reading phase's own test (``reader``). ``reading_accuracy`` puts a text description there instead, for
LMs pretrained on the world's text:

LLaVA's stage 2 teaches an LM to answer from image tokens; an LM that cannot answer from a *text* description of
the same scene starts that stage with nothing to build on. This test puts each held-out scene's
exact description where the image was, asks the world's question, and scores the greedy answer by exact match
(case-insensitive) per question type. Only the exact-match types are used (multiple choice and boxes have their
own scorers in `vlmforge eval`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from vlmforge.data.chat import IGNORE_INDEX
from vlmforge.geometry import iou, parse_box
from vlmforge.models.assemble import IMAGE_TOKEN
from vlmforge.shapes.foundation.codes import embed_with_vectors, object_codes
from vlmforge.shapes.foundation.corpus import GroundedQuestion, grounded_questions, read_world
from vlmforge.shapes.foundation.reader import BOX_TASK, ReaderSpec, ReadingSample, reading_samples
from vlmforge.shapes.foundation.vision import Region, VisionSpec


def same_answer(reply: str, answer: str) -> bool:
    """Exact match, ignoring case and surrounding white space: how both reading tests score a reply."""
    return reply.strip().lower() == answer.strip().lower()


def score_reading(questions: Sequence[GroundedQuestion], answer: Callable[[list[list[dict]]], list[str]],
                  batch_size: int = 64) -> dict[str, float]:  # fmt: skip
    """Exact-match accuracy per question type of ``answer`` (chat messages in, one answer string per question)."""
    hits, totals = Counter(), Counter()
    for start in range(0, len(questions), batch_size):
        batch = questions[start : start + batch_size]
        for question, reply in zip(batch, answer([q.messages for q in batch]), strict=True):
            totals[question.task] += 1
            hits[question.task] += same_answer(reply, question.answer)
    return {task: hits[task] / totals[task] for task in totals}


def greedy_answerer(model, tokenizer, max_new_tokens: int = 8) -> Callable[[list[list[dict]]], list[str]]:
    """Batched greedy generation through the tokenizer's chat template (left padding, as at inference)."""

    def answer(conversations: list[list[dict]]) -> list[str]:
        prompts = tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tokenizer.padding_side = side
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)

    return answer


def reading_accuracy(
    model, tokenizer, world_dir: str | Path, split: str = "test", limit: int = 400
) -> dict[str, float]:
    """The LM's reading-comprehension accuracy per question type on the first ``limit`` questions of ``split``."""
    questions = grounded_questions(world_dir, split, limit=limit)
    return score_reading(questions, greedy_answerer(model, tokenizer))


def _answer_start(sample: ReadingSample) -> int:
    """Where the answer starts: the first labelled position (the prompt is everything before it)."""
    return next(i for i, label in enumerate(sample.labels) if label != IGNORE_INDEX)


def _answer_ids(sample: ReadingSample) -> list[int]:
    return [label for label in sample.labels if label != IGNORE_INDEX]


@torch.no_grad()
def object_reading_accuracy(
    model,
    tokenizer,
    world_dir: str | Path,
    train_regions: Sequence[Sequence[Region]],
    vision: VisionSpec,
    spec: ReaderSpec,
    seed: int = 0,
    split: str = "test",
    per_task: int = 300,
    batch_size: int = 64,
    tasks: Sequence[str] | None = None,
) -> dict[str, float]:
    """The reading phase's own held-out test: the first ``per_task`` questions of each type the phase taught, asked
    about ``split``'s scenes with their object vectors where the image goes (codes drawn as in training, from
    ``train_regions``), answered greedily (``tasks``: only these). Exact match per type; boxes score Acc@IoU 0.5.

    Why: whether the LM learned to read (existence in particular) decides the Bunny lab's accuracy, and the reading
    loss shows it only roughly. Measured here in seconds, it is in the manifest of every build."""
    held_out = read_world(world_dir, split)
    codes = object_codes(held_out.regions, vision, model.config.hidden_size, seed, vocabulary=train_regions)
    if tasks is None:
        tasks = spec.phase_tasks()
    questions = reading_samples(world_dir, held_out.image_paths, tokenizer, codes.parts.shape[1], tasks, split,
                                captions=False, per_task=per_task)  # fmt: skip
    asked = Counter(sample.task for sample in questions)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    embed = model.get_input_embeddings()
    hits: Counter = Counter()
    for start in range(0, len(questions), batch_size):
        batch = questions[start : start + batch_size]
        prompts = [{"input_ids": s.input_ids[: _answer_start(s)]} for s in batch]
        padded = tokenizer.pad(prompts, padding_side="left", return_tensors="pt")  # left, as at inference
        inputs = embed_with_vectors(embed, padded["input_ids"], image_id, codes.vectors([s.scene for s in batch]))
        # Room for the longest right answer and its end of turn: a box takes one token per digit.
        longest = max(len(_answer_ids(s)) for s in batch)
        out = model.generate(inputs_embeds=inputs, attention_mask=padded["attention_mask"],
                             max_new_tokens=longest + 2, do_sample=False, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        for sample, generated in zip(batch, out, strict=True):
            reply = tokenizer.decode(generated, skip_special_tokens=True)
            answer = tokenizer.decode(_answer_ids(sample), skip_special_tokens=True)
            if sample.task == BOX_TASK:
                box, truth = parse_box(reply), parse_box(answer)
                hits[sample.task] += bool(box and truth and iou(box, truth) >= 0.5)
            else:
                hits[sample.task] += same_answer(reply, answer)
    return {task: hits[task] / asked[task] for task in asked}
