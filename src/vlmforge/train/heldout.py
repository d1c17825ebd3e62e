"""Held-out evaluation during training: teacher-forced answer accuracy on a stage's ``eval_data``.

The Trainer already runs the evaluation loop (``eval_strategy="steps"``) and reports ``eval_loss``. Loss alone
hides what matters on short answers: a model can lower it by learning the answer *prior* while never reading the
image, and the jump from "a plausible answer" to "the right answer" shows in accuracy first. So the loop also
scores, on the tokens that carry the loss (the assistant turns):

- ``label_token_accuracy``: the fraction of those tokens the model predicts right given the ones before;
- ``answer_exact_match``: the fraction of samples whose every such token is right (a sample's answers, whole).

Both are teacher-forced, so they cost one forward pass per sample, not a generation.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import EvalPrediction

from vlmforge.data.chat import IGNORE_INDEX


def predicted_tokens(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Reduce logits to the arg-max token ids per batch, so the eval loop keeps (N, L) ids, not (N, L, vocab).
    ``VlmTrainer.prediction_step`` has already dropped every other output field."""
    return logits.argmax(dim=-1)


def answer_accuracy(prediction: EvalPrediction) -> dict[str, float]:
    """Teacher-forced accuracy on the label tokens; position t's prediction is scored against label t + 1.

    Batches of different lengths arrive padded with -100 in both arrays, so padding is never scored.
    """
    predicted, labels = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
    predicted, targets = predicted[:, :-1], labels[:, 1:]
    scored = targets != IGNORE_INDEX
    correct = (predicted == targets) & scored
    per_sample_scored = scored.sum(axis=1)
    has_answer = per_sample_scored > 0
    whole = correct.sum(axis=1) == per_sample_scored
    return {
        "label_token_accuracy": float(correct.sum() / max(1, scored.sum())),
        "answer_exact_match": float(whole[has_answer].mean()) if has_answer.any() else 0.0,
    }
