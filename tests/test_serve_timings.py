"""Where a request's time goes (GET /timings), and the cheaper response path: same answers, same wire format."""

import asyncio
import json

import httpx
import pytest

from serve_support import chatty_llava, data_url, image, user_message, vlm  # noqa: F401, F811
from vlmforge.runtime import Completion, Conversation, SamplingParams, VisionLanguageModel
from vlmforge.serve import protocol as p
from vlmforge.serve.app import INLINE_DECODE_CHARS, completion_response, create_app, decode_inline
from vlmforge.serve.batcher import DynamicBatcher
from vlmforge.serve.engine import prompt_token_counts
from vlmforge.serve.runner import ServerThread
from vlmforge.serve.settings import ServeSettings
from vlmforge.serve.timings import STAGES

KEY = "timing-key"
GENERATION = ["template", "tokenize", "image_processor", "generate_setup", "vision", "prefill", "decode"]


@pytest.fixture(scope="module")
def profiled(vlm):  # noqa: F811
    batcher = DynamicBatcher(vlm, max_batch_size=4, window_ms=200)
    app = create_app(vlm, ServeSettings(api_key=KEY, profile=True), ui=False, batcher=batcher)
    with ServerThread(app) as running:
        yield running
    vlm.observe(None)


def _body(vlm, text, colour, stream=False):  # noqa: F811
    return {
        "model": vlm.name,
        "messages": [user_message(text, image(colour))],
        "temperature": 0,
        "max_tokens": 6,
        "stream": stream,
    }


async def _post_together(url, bodies):
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        responses = await asyncio.gather(*(http.post("/v1/chat/completions", json=b) for b in bodies))
    return [r.status_code for r in responses]


def test_timings_report_each_stage_per_request_and_reset(profiled, vlm):  # noqa: F811
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(profiled.url + "/timings").status_code == 401  # behind the API key, like /v1
    assert httpx.delete(profiled.url + "/timings", headers=headers).json() == {"reset": True}
    bodies = [_body(vlm, "what is it?", (200, 10, 10)), _body(vlm, "and this?", (10, 10, 200))]
    assert asyncio.run(_post_together(profiled.url, bodies)) == [200, 200]
    report = httpx.get(profiled.url + "/timings", headers=headers).json()
    assert report["requests"] == 2 and report["batches"] >= 1 and report["mean_batch_size"] >= 1
    assert report["decode_steps_per_batch"] > 0
    stages = report["stages"]
    for stage in ["request", "images", "queue", *GENERATION, "detokenize", "wakeup", "respond"]:
        assert stage in stages and stages[stage]["wall_ms"] >= 0, stage
    # a batch stage is lived through by every request of the batch but paid for once
    assert all(stages[s]["busy_ms"] <= stages[s]["wall_ms"] + 1e-9 for s in GENERATION)
    inside = sum(v["wall_ms"] for k, v in stages.items() if k not in ("request", "other"))
    assert stages["other"]["wall_ms"] == pytest.approx(stages["request"]["wall_ms"] - inside)
    assert set(report["descriptions"]) >= set(STAGES)
    httpx.delete(profiled.url + "/timings", headers=headers)
    assert httpx.get(profiled.url + "/timings", headers=headers).json()["requests"] == 0


def test_streamed_requests_are_timed_too(profiled, vlm):  # noqa: F811
    headers = {"Authorization": f"Bearer {KEY}"}
    httpx.delete(profiled.url + "/timings", headers=headers)
    assert asyncio.run(_post_together(profiled.url, [_body(vlm, "hello", (0, 90, 0), stream=True)])) == [200]
    stages = httpx.get(profiled.url + "/timings", headers=headers).json()["stages"]
    assert stages["streamer"]["wall_ms"] >= 0 and stages["decode"]["wall_ms"] > 0


def test_no_timings_unless_asked(vlm):  # noqa: F811
    with ServerThread(create_app(vlm, ServeSettings(), ui=False)) as running:
        assert httpx.get(running.url + "/timings").status_code == 404


def test_observing_the_stages_leaves_the_answers_alone(chatty_llava):  # noqa: F811
    model = VisionLanguageModel.from_pretrained(chatty_llava)  # its own: a profiled server keeps its observer
    conversations = [Conversation.single_turn(q, [image(c)]) for q, c in [("hi", (1, 2, 3)), ("what?", (250, 9, 9))]]
    params = SamplingParams(max_new_tokens=6)
    plain = model.generate(conversations, params)
    seen: dict[str, float] = {}
    processor_type = type(model.processor.image_processor)
    model.observe(lambda stage, seconds: seen.__setitem__(stage, seen.get(stage, 0.0) + seconds))
    try:
        assert model.generate(conversations, params) == plain
        assert "".join("".join(d) for d in model.stream(conversations[:1], params)).strip() == plain[0].text
    finally:
        model.observe(None)
    assert set(GENERATION) <= set(seen) and seen["decode_steps"] > 0
    assert type(model.processor.image_processor) is processor_type  # the timing wrapper is gone again


def test_batched_preprocessing_equals_one_at_a_time(vlm):  # noqa: F811
    conversations = [
        Conversation.single_turn("what colour?", [image((200, 0, 0), (40, 30))]),
        Conversation.single_turn("how many shapes are there here?", [image((0, 0, 200), (17, 61))]),
        Conversation.single_turn("two?", [image((0, 99, 0), (64, 64)), image((5, 5, 5), (8, 9))]),
    ]
    batched = vlm.prepare(conversations)
    images = 0
    for row, conversation in enumerate(conversations):
        alone = vlm.prepare([conversation])
        n = len(conversation.images)
        assert batched["pixel_values"][images : images + n].equal(alone["pixel_values"])
        images += n
        real = batched["attention_mask"][row].bool()
        assert batched["input_ids"][row][real].equal(alone["input_ids"][0])


def test_completion_response_is_the_openai_schema():
    body = json.loads(completion_response(Completion("a red circle ✓", 12, 4, "stop"), "m").body)
    parsed = p.ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.content == "a red circle ✓" and parsed.usage.total_tokens == 16
    assert body["object"] == "chat.completion" and body["choices"][0]["logprobs"] is None


def test_only_small_inline_images_decode_on_the_event_loop():
    def messages(*urls):
        parts = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
        return p.ChatCompletionRequest(model="m", messages=[{"role": "user", "content": [*parts]}]).messages

    small = data_url(image((1, 2, 3)))
    assert decode_inline(messages(small, small))
    assert decode_inline(p.ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}]).messages)
    assert not decode_inline(messages(small, "https://example.com/cat.png"))
    assert not decode_inline(messages("file:///tmp/cat.png"))
    assert not decode_inline(messages("data:image/png;base64," + "A" * INLINE_DECODE_CHARS))


def test_a_streamed_batch_is_prepared_once(chatty_llava):  # noqa: F811
    model = VisionLanguageModel.from_pretrained(chatty_llava)
    stages: list[str] = []
    model.observe(lambda stage, seconds: stages.append(stage))
    conversations = [
        Conversation.single_turn(q, [image(c)]) for q, c in [("hi", (1, 2, 3)), ("a longer one?", (9, 9, 9))]
    ]
    params = SamplingParams(max_new_tokens=4)
    for _ in model.stream(conversations, params):
        pass
    counted = prompt_token_counts(model, conversations)
    assert counted == [c.prompt_tokens for c in model.generate(conversations, params)]
    assert stages.count("template") == 2  # the stream's and generate's: counting the prompts prepared nothing again
    other = [Conversation.single_turn("hi", [image((1, 2, 3))])]
    assert prompt_token_counts(model, other) == counted[:1]  # other conversations are prepared afresh


def test_the_benchmark_model_is_the_lab_size(tmp_path):
    from transformers import AutoConfig

    from vlmforge.testing.tiny import save_lab_size_llava

    config = AutoConfig.from_pretrained(save_lab_size_llava(tmp_path / "lab-size"))
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (64, 21)  # 9 image tokens
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (128, 4)
