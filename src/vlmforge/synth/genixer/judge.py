"""The judge: how true a VLM thinks a generated question/answer pair is for its image.

The default score is ``p_yes = P(Yes) / (P(Yes) + P(No))`` from the judge's next-token logits after the prompt:
one forward pass per record, batched, no generation. The released code's score is kept as an option for fidelity:
it *samples* an answer and takes a geometric mean of the sampled tokens' probabilities, so a confident "No" scores
as high as a confident "Yes"; here its failures are recorded by reason instead of dropping the record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from vlmforge.errors import ConfigError

# The released filter's template, character for character (its trailing line break included).
JUDGE_PROMPT = (
    "Here is a question and answer pair. Is '{qa}' true for this image?\nPlease answer this question with Yes or No.\n"
)
SCORES = ("p_yes", "released")
# The released sampler's settings: top-p 0.95, top-k 10, at most 10 new tokens.
RELEASED_SAMPLING = {"do_sample": True, "top_p": 0.95, "top_k": 10, "max_new_tokens": 10}


def qa_text(record: dict[str, Any]) -> str:
    """``Question: q Answer: a`` for every pair of the record, joined by spaces (a dialogue is judged whole)."""
    turns = record.get("conversations") or []
    pairs = zip(turns[::2], turns[1::2], strict=False)
    return " ".join(
        f"Question: {h['value'].replace('<image>', '').strip()} Answer: {g['value'].strip()}" for h, g in pairs
    )


def judge_prompt(record: dict[str, Any]) -> str:
    return JUDGE_PROMPT.format(qa=qa_text(record))


def p_yes_from_logits(logits: Any, yes_ids: int | Sequence[int], no_ids: int | Sequence[int]) -> Any:
    """P(Yes) / (P(Yes) + P(No)) per row of next-token ``logits`` [batch, vocab]. Each word's probability sums
    over its token spellings ("Yes" and " Yes" where both are single tokens); a softmax over the two sums."""
    import torch

    yes = [yes_ids] if isinstance(yes_ids, int) else list(yes_ids)
    no = [no_ids] if isinstance(no_ids, int) else list(no_ids)
    logits = logits.float()
    pair = torch.stack([logits[:, yes].logsumexp(-1), logits[:, no].logsumexp(-1)], dim=-1)
    return torch.softmax(pair, dim=-1)[:, 0]


def p_yes_from_logprobs(top: dict[str, float]) -> tuple[float | None, str | None]:
    """p_yes from a server's top log-probabilities of the first token (``{token_text: logprob}``). A word outside
    the top list counts as probability 0; when both are outside, there is no score."""
    yes = [lp for tok, lp in top.items() if tok.strip() == "Yes"]
    no = [lp for tok, lp in top.items() if tok.strip() == "No"]
    if not yes and not no:
        return None, "yes_no_not_in_top_logprobs"
    p_y = sum(math.exp(lp) for lp in yes)
    p_n = sum(math.exp(lp) for lp in no)
    return p_y / (p_y + p_n), None


def released_score(token_probs: Sequence[float]) -> tuple[float | None, str | None]:
    """The released code's score of a sampled answer: the product of *all* its tokens' probabilities raised to
    1 / (number of tokens - 1). ``(score, None)``, or ``(None, reason)`` where the released code divided by zero
    (a one-token answer) and its bare ``except`` silently dropped the record."""
    if not token_probs:
        return None, "empty_answer"
    if len(token_probs) == 1:
        return None, "single_token_answer"
    return math.prod(token_probs) ** (1.0 / (len(token_probs) - 1)), None


def single_token_ids(tokenizer: Any, prompt_text: str, words: Sequence[str] = ("Yes", "No")) -> list[list[int]]:
    """Per word, the ids of its spellings ("Yes", " Yes") that are one token right after ``prompt_text`` (the
    judge's rendered template); which one a model writes there depends on its template and tokenizer.

    p_yes reads one logit per spelling, which is only P(word) when the word is one token there; when no spelling
    is, this raises and names the pieces the tokenizer makes of it."""
    base = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    out = []
    for word in words:
        ids, pieces = [], []
        for spelling in (word, " " + word):
            full = tokenizer(prompt_text + spelling, add_special_tokens=False)["input_ids"]
            extra = full[len(base) :]
            if full[: len(base)] == base and len(extra) == 1:
                ids.append(extra[0])
            else:
                pieces.append(tokenizer.convert_ids_to_tokens(extra if full[: len(base)] == base else full[-3:]))
        if not ids:
            raise ConfigError(
                f"the judge's tokenizer does not write {word!r} as one token after its chat template (it writes "
                f"{pieces}); p_yes needs 'Yes' and 'No' to be single first tokens: use another judge model, or "
                "--score released"
            )
        out.append(sorted(set(ids)))
    return out
