"""A saved model as the evaluation runner's generator: requests in, greedy answers out, through the runtime that
`vlmforge chat` and `vlmforge serve` use, so a benchmark scores exactly what a user would be served."""

from __future__ import annotations

from pathlib import Path


def load_generator(model_dir: str | Path, device: str | None = None, batch_size: int = 16):
    """A callable for the evaluation runner: requests (prompt, images, max_new_tokens) -> answers, greedy. Its
    ``answer_budget(request)`` fits a request's max_new_tokens to the model's context, as the server fits a request
    with no max_tokens (cut to the room the prompt leaves; a ContextLengthError when there is none); its
    ``counts_pixels`` says whether that count needs the request's real images (the runtime's, see there)."""
    from vlmforge.runtime import Conversation, SamplingParams, VisionLanguageModel

    vlm = VisionLanguageModel.from_pretrained(model_dir, device=device)

    def ask(request) -> Conversation:
        return Conversation.single_turn(request.prompt, request.images)

    def generate(requests) -> list[str]:
        answers = [""] * len(requests)
        for start in range(0, len(requests), batch_size):
            rows = range(start, min(start + batch_size, len(requests)))
            # one batch per budget: a batch runs every row to its longest, which takes a cut row past its context
            for tokens in sorted({requests[i].max_new_tokens for i in rows}):
                same = [i for i in rows if requests[i].max_new_tokens == tokens]
                completions = vlm.generate([ask(requests[i]) for i in same], SamplingParams(tokens))
                for i, completion in zip(same, completions, strict=True):
                    answers[i] = completion.text
        return answers

    generate.model_name = vlm.name  # type: ignore[attr-defined]
    generate.answer_budget = lambda r: vlm.answer_budget(ask(r), None, r.max_new_tokens)  # type: ignore[attr-defined]
    generate.counts_pixels = vlm.counts_pixels  # type: ignore[attr-defined]
    return generate
