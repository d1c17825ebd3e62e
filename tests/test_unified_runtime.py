"""A unified model folder answers through the runtime, the eval runner and the server's chat endpoint, exactly as
its own greedy decode of the understanding prompt training uses, and never with an image code."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from fastapi.testclient import TestClient

from serve_support import user_message
from unified_helpers import save_unified_folder, scene
from vlmforge.errors import ConfigError, ContextLengthError
from vlmforge.eval import evaluate
from vlmforge.eval.generator import load_generator
from vlmforge.models.unified.chat_processor import image_tokenizer_of
from vlmforge.models.unified.prompts import understanding_sample
from vlmforge.runtime import Conversation, SamplingParams, VisionLanguageModel
from vlmforge.serve.app import create_app
from vlmforge.serve.batcher import DynamicBatcher
from vlmforge.serve.engine import fit_context
from vlmforge.serve.settings import ServeSettings

QUESTIONS = ["What colour is the circle?", "How many objects are there?", "Where is the square?"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_unified_folder(tmp_path_factory.mktemp("unified_runtime") / "uni-two-end")


@pytest.fixture(scope="module")
def vlm(folder):
    return VisionLanguageModel.from_pretrained(folder)


def reference_answer(vlm, folder, image, question: str, max_new_tokens: int = 8) -> str:
    """Greedy decoding without a cache or batching from understanding_sample's prompt, the forbidden ids masked."""
    model, tokenizer = vlm.model, vlm.tokenizer
    codes = image_tokenizer_of(folder).encode([image])[0].tolist()
    ids, _ = understanding_sample(tokenizer, model.config, codes, question)
    forbidden = torch.tensor(model.generation_config.suppress_tokens)
    out = []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(torch.tensor([ids + out]), use_cache=False).logits[0, -1]
        logits[forbidden] = -float("inf")
        token = int(logits.argmax())
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
    return tokenizer.decode([t for t in out if t not in tokenizer.all_special_ids]).strip()


def test_answers_equal_greedy_decoding_of_the_understanding_prompt(vlm, folder):
    conversations = [Conversation.single_turn(q, [scene(i)]) for i, q in enumerate(QUESTIONS)]
    batched = vlm.generate(conversations, SamplingParams(max_new_tokens=8))
    expected = [reference_answer(vlm, folder, scene(i), q) for i, q in enumerate(QUESTIONS)]
    assert [c.text for c in batched] == expected
    # Varied, image-dependent answers: otherwise any two decodes would agree.
    assert all(expected) and len(set(expected)) > 1
    other = vlm.generate([Conversation.single_turn(QUESTIONS[0], [scene(7)])], SamplingParams(max_new_tokens=8))
    assert other[0].text != expected[0]
    stream = [""] * 3
    for deltas in vlm.stream(conversations, SamplingParams(max_new_tokens=8)):
        stream = [s + d for s, d in zip(stream, deltas, strict=True)]
    assert [s.strip() for s in stream] == expected


def test_a_question_about_one_image_has_exactly_the_training_layout(vlm, folder):
    conversation = Conversation.single_turn(QUESTIONS[0], [scene(4)])
    ids = vlm.prepare([conversation])["input_ids"][0].tolist()
    codes = image_tokenizer_of(folder).encode([scene(4)])[0].tolist()
    assert ids == understanding_sample(vlm.tokenizer, vlm.model.config, codes, QUESTIONS[0])[0]
    two = Conversation.single_turn("Which is brighter?", [scene(4), scene(5)])
    ids = vlm.prepare([two])["input_ids"][0].tolist()
    starts = [i for i, t in enumerate(ids) if t == vlm.model.config.vision_start_token_id]
    first = [t - vlm.model.config.text_vocab_size for t in ids[starts[0] + 1 : starts[0] + 5]]
    second = [t - vlm.model.config.text_vocab_size for t in ids[starts[1] + 1 : starts[1] + 5]]
    expected = image_tokenizer_of(folder).encode([scene(4), scene(5)]).tolist()
    assert [first, second] == expected and first != second  # both images, in order


def test_answers_never_hold_image_codes(vlm):
    config = vlm.model.config
    codes = slice(config.text_vocab_size, config.text_vocab_size + config.codebook_size)

    def favour_codes(_module, _inputs, logits):
        logits = logits.clone()
        logits[..., codes] += 1000.0
        return logits

    hook = vlm.model.lm_head.register_forward_hook(favour_codes)
    conversation = [Conversation.single_turn(QUESTIONS[0], [scene(0)])]
    try:
        answer = vlm.generate(conversation, SamplingParams(max_new_tokens=6))[0]
        inputs = vlm.prepare(conversation)
        saved = vlm.model.generation_config.suppress_tokens
        vlm.model.generation_config.suppress_tokens = None
        try:  # the same model without the mask would answer in codes: the mask is what keeps them out
            raw = vlm.model.generate(**inputs, max_new_tokens=3, do_sample=False)[0, inputs["input_ids"].shape[1] :]
        finally:
            vlm.model.generation_config.suppress_tokens = saved
    finally:
        hook.remove()
    assert all(codes.start <= t < codes.stop for t in raw.tolist())
    assert answer.completion_tokens > 0 and answer.text


def test_text_only_and_bad_conversations(vlm, folder):
    text_only = vlm.generate([Conversation.single_turn("How many objects are there?")], SamplingParams(8))[0]
    assert text_only.prompt_tokens > 0 and text_only.text
    with_image = Conversation.single_turn("What colour is it?", [scene(0)])
    assert vlm.prompt_length(with_image) == vlm.prompt_tokens([with_image])[0]  # codes counted without encoding
    with pytest.raises(ConfigError, match="longer than the model's context of 1024"):
        vlm.check(Conversation.single_turn("red " * 1100, [scene(0)]))
    with pytest.raises(ConfigError, match="holds '<\\|vision_start\\|>', a token only images may bring"):
        vlm.check(Conversation.single_turn("a <|vision_start|> b", [scene(0)]))
    with pytest.raises(ConfigError, match="cannot read these images.*8x8"):
        vlm.prepare([Conversation.single_turn("What colour?", [scene(0).resize((16, 16))])])


def test_fitting_a_request_counts_its_prompt_once_and_keeps_the_checks(vlm, monkeypatch):
    counted = []
    count = vlm.processor.prompt_length
    monkeypatch.setattr(vlm.processor, "prompt_length", lambda *a: counted.append(a) or count(*a))
    question = Conversation.single_turn(QUESTIONS[0], [scene(0)])
    params = fit_context(vlm, question, SamplingParams(max_new_tokens=8), requested=True)
    assert params.max_new_tokens == 8 and len(counted) == 1
    # the processor's guard still runs on the counted prompt: a too-long or image-token prompt is refused
    with pytest.raises(ContextLengthError, match="maximum context length is 1024 tokens"):
        fit_context(vlm, Conversation.single_turn("red " * 1100, [scene(0)]), params, requested=False)
    with pytest.raises(ConfigError, match="a token only images may bring"):
        fit_context(vlm, Conversation.single_turn("a <|vision_start|> b", [scene(0)]), params, requested=False)
    counted.clear()
    vlm.check(question)  # a direct caller, with no count in hand, gets it counted
    assert len(counted) == 1


def test_the_eval_runner_scores_the_unified_model(folder, tmp_path):
    scene(3).save(tmp_path / "a.png")
    records = [
        {"id": f"q{i}", "image": "a.png", "conversations": [{"from": "human", "value": f"<image>\n{q}"}],
         "answer": "red"}
        for i, q in enumerate(QUESTIONS)
    ]  # fmt: skip
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    generator = load_generator(folder, batch_size=2)
    result = evaluate(generator, ["jsonl"], tmp_path / "out", data={"jsonl": str(tmp_path / "mine.jsonl")},
                      model={"name": generator.model_name}, progress=False, max_new_tokens=8)  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples_jsonl.jsonl").read_text().splitlines()]
    vlm = VisionLanguageModel.from_pretrained(folder)
    image = scene(3)
    expected = [vlm.generate([Conversation.single_turn(r["prompt"], [image])], SamplingParams(8))[0].text for r in rows]
    assert [r["prediction"] for r in rows] == expected and len(rows) == 3
    assert result["tasks"]["jsonl"]["metrics"]["accuracy"]["n"] == 3


def test_the_server_answers_as_the_runtime(vlm):
    with TestClient(create_app(vlm, ServeSettings(), ui=False)) as http:
        body = {"model": vlm.name, "messages": [user_message(QUESTIONS[1], scene(1))], "max_tokens": 8,
                "temperature": 0}  # fmt: skip
        answer = http.post("/v1/chat/completions", json=body)
        too_long = dict(body, messages=[user_message("red " * 1100, scene(1))])
        refused = http.post("/v1/chat/completions", json=too_long)
        wrong_size = dict(body, messages=[user_message("What?", scene(1).resize((16, 16)))])
        unreadable = http.post("/v1/chat/completions", json=wrong_size)
    expected = vlm.generate([Conversation.single_turn(QUESTIONS[1], [scene(1)])], SamplingParams(8))[0]
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == expected.text
    assert answer.json()["usage"]["prompt_tokens"] == expected.prompt_tokens
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 1024 tokens; the prompt has" in refused.json()["error"]["message"]
    assert unreadable.status_code == 400 and "8x8" in unreadable.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_an_unreadable_image_fails_only_its_own_request_in_a_batch(vlm, stream):
    """Unified models are served with dynamic batching: a batch that fails is retried request by request."""
    batcher, sizes = DynamicBatcher(vlm, max_batch_size=4, window_ms=500), []
    batcher.on_batch = sizes.append
    good = Conversation.single_turn(QUESTIONS[0], [scene(2)])
    bad = Conversation.single_turn(QUESTIONS[0], [scene(2).resize((16, 16))])

    async def ask():
        jobs = [batcher.submit(c, SamplingParams(8), stream=stream) for c in (good, bad, good)]
        return await asyncio.gather(*(job.result() for job in jobs), return_exceptions=True)

    try:
        first, refused, third = asyncio.run(ask())
    finally:
        batcher.close()
    expected = vlm.generate([good], SamplingParams(8))[0]
    assert sizes[0] == 3  # the three were batched together
    assert isinstance(refused, ConfigError) and "8x8" in str(refused)
    assert first.text == third.text == expected.text and first.prompt_tokens == expected.prompt_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_answers_of_different_lengths_share_a_batch_and_equal_each_alone(vlm, folder, stream):
    """Requests whose max_tokens differ run as one batch to the longest; each is cut at its own."""
    batcher, sizes = DynamicBatcher(vlm, max_batch_size=4, window_ms=500), []
    batcher.on_batch = sizes.append
    rows = [(QUESTIONS[0], scene(3), 3), (QUESTIONS[1] + " Count them all.", scene(4), 9), (QUESTIONS[2], scene(5), 6)]

    async def ask():
        jobs = [batcher.submit(Conversation.single_turn(q, [i]), SamplingParams(n), stream) for q, i, n in rows]
        return await asyncio.gather(*(job.result() for job in jobs))

    try:
        answers = asyncio.run(ask())
    finally:
        batcher.close()
    assert sizes == [3]
    for (question, image, n), answer in zip(rows, answers, strict=True):
        assert answer.text == reference_answer(vlm, folder, image, question, n)
        if not stream:
            assert answer == vlm.generate([Conversation.single_turn(question, [image])], SamplingParams(n))[0]
