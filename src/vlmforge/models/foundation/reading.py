"""Can the LM answer from what precedes the question? Measured before any VLM is trained on it.

LLaVA's stage 2 teaches an LM to answer from image tokens; an LM that cannot answer from a *text* description of
the same scene starts that stage with nothing to build on (docs/bunny.md). This test puts each held-out scene's
exact description where the image was, asks the world's question, and scores the greedy answer by exact match
(case-insensitive) per question type. Only the exact-match types are used (multiple choice and boxes have their
own scorers in `vlmforge eval`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from vlmforge.models.foundation.corpus import GroundedQuestion, grounded_questions


def score_reading(questions: Sequence[GroundedQuestion], answer: Callable[[list[list[dict]]], list[str]],
                  batch_size: int = 64) -> dict[str, float]:  # fmt: skip
    """Exact-match accuracy per question type of ``answer`` (chat messages in, one answer string per question)."""
    hits, totals = Counter(), Counter()
    for start in range(0, len(questions), batch_size):
        batch = questions[start : start + batch_size]
        for question, reply in zip(batch, answer([q.messages for q in batch]), strict=True):
            totals[question.task] += 1
            hits[question.task] += reply.strip().lower() == question.answer.strip().lower()
    return {task: hits[task] / totals[task] for task in totals}


def greedy_answerer(model, tokenizer, max_new_tokens: int = 8) -> Callable[[list[list[dict]]], list[str]]:
    """Batched greedy generation through the tokenizer's chat template (left padding, as at inference)."""
    import torch

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
