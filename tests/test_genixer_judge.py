"""The judge: p_yes against hand-computed logits, the released score on a hand-worked example, the single-token
check, and a local checkpoint judge whose batched scores equal its one-by-one scores."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from vlmforge.errors import ConfigError
from vlmforge.synth.genixer.judge import (
    judge_prompt,
    p_yes_from_logits,
    p_yes_from_logprobs,
    qa_text,
    released_score,
    single_token_ids,
)
from vlmforge.testing.tiny import save_tiny_llava

YES_NO_TEXT = ["Yes", "No", "Is it red? Yes", "Is it blue? No"] * 30


def test_p_yes_matches_hand_computed_logits():
    # Vocabulary of 5; "Yes" is id 3, "No" id 1. Other tokens' logits must not matter.
    logits = torch.tensor([[0.0, 0.0, 9.0, 2.0, -1.0], [4.0, 1.0, -3.0, 1.0, 7.0], [0.0, 3.0, 0.0, 0.5, 0.0]])
    got = p_yes_from_logits(logits, yes_ids=3, no_ids=1).tolist()
    hand = [math.e**2 / (math.e**2 + 1), 0.5, math.e**0.5 / (math.e**0.5 + math.e**3)]
    assert got == pytest.approx(hand, abs=1e-6)
    assert hand[0] == pytest.approx(0.880797, abs=1e-6) and hand[2] == pytest.approx(0.075858, abs=1e-6)
    # Two spellings of "Yes" (ids 3 and 4): their probabilities add, e^2 + e^-1 against e^0.
    both = p_yes_from_logits(logits[:1], yes_ids=[3, 4], no_ids=[1]).item()
    assert both == pytest.approx((math.e**2 + math.e**-1) / (math.e**2 + math.e**-1 + 1), abs=1e-6)


def test_p_yes_from_server_logprobs():
    assert p_yes_from_logprobs({"Yes": math.log(0.6), " No": math.log(0.2), "Maybe": -1.0})[0] == pytest.approx(0.75)
    assert p_yes_from_logprobs({"Yes": -0.1, "The": -3.0}) == (1.0, None)  # "No" outside the top list: 0
    assert p_yes_from_logprobs({"The": -0.1}) == (None, "yes_no_not_in_top_logprobs")


def test_released_score_on_a_hand_worked_example():
    # Sampled "Yes", "," and end-of-sequence: (0.9 * 0.8 * 0.5) ** (1 / (3 - 1)) = 0.36 ** 0.5 = 0.6.
    assert released_score([0.9, 0.8, 0.5]) == (pytest.approx(0.6), None)
    # A confident "No" (then end-of-sequence) scores high too: the flaw the p_yes score removes.
    assert released_score([0.95, 0.99])[0] == pytest.approx(0.9405)
    # Where the released code divided by zero and its bare except dropped the record: a reason instead.
    assert released_score([0.97]) == (None, "single_token_answer")
    assert released_score([]) == (None, "empty_answer")


def test_prompt_is_the_reference_wording():
    rec = {"conversations": [{"from": "human", "value": "<image>\nIs it red?"}, {"from": "gpt", "value": "Yes"}]}
    assert qa_text(rec) == "Question: Is it red? Answer: Yes"
    assert judge_prompt(rec) == (
        "Here is a question and answer pair. Is 'Question: Is it red? Answer: Yes' true for this image?\n"
        "Please answer this question with Yes or No.\n"
    )


@pytest.fixture(scope="module")
def yes_no_llava(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("judge") / "llava", extra_text=YES_NO_TEXT)


def _items(n: int) -> list:
    colors = ["red", "blue", "green", "yellow", "purple"]
    return [
        (
            Image.new("RGB", (32, 32), colors[i % 5]),
            f"Is 'Question: what colour? Answer: {colors[i % 5]}' true?" * (1 + i % 3),
        )
        for i in range(n)
    ]


def test_local_judge_batched_equals_one_by_one(yes_no_llava):
    from vlmforge.synth.genixer.judges import LocalJudge

    judge = LocalJudge(str(yes_no_llava), batch_size=5, device="cpu")
    items = _items(5)
    batched = [s for s, _ in judge.p_yes(items)]
    single = [judge.p_yes([item])[0][0] for item in items]
    assert batched == pytest.approx(single, abs=1e-5) and all(0 < p < 1 for p in batched)
    scores = judge.released(items, seed=0)
    assert len(scores) == 5 and all((s is None) != (r is None) for s, r in scores)


def test_yes_and_no_must_be_single_first_tokens(tiny_llava):
    from vlmforge.synth.genixer.judges import LocalJudge

    judge = LocalJudge(str(tiny_llava), device="cpu")  # its tokenizer never saw "Yes": it splits it
    with pytest.raises(ConfigError, match="'Yes' as one token.*--score released"):
        judge.p_yes(_items(1))
    with pytest.raises(ConfigError):
        single_token_ids(judge.vlm.tokenizer, "Answer: ", ["Yes"])


def test_spellings_of_yes_and_no_after_the_template(yes_no_llava):
    from vlmforge.synth.genixer.judges import LocalJudge

    tok = LocalJudge(str(yes_no_llava), device="cpu").vlm.tokenizer
    yes, no = single_token_ids(tok, "Is it red?\n")
    for ids, word in ((yes, "Yes"), (no, "No")):
        assert ids and all(tok.decode([i]).strip() == word for i in ids)


def test_a_model_is_a_folder_or_a_hub_id():
    from vlmforge.synth.genixer.backends import model_dir

    assert model_dir(".") == "."
    with pytest.raises(ConfigError, match="neither a local folder nor a hub id"):
        model_dir("nobody-here/no-such-judge-xyz")  # offline, not cached
