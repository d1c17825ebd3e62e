"""Dynamic batching: concurrent requests share batches and still get their one-at-a-time answers."""

import asyncio
import json
from types import SimpleNamespace

import httpx
import openai
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from serve_support import FakeEngine, chatty_llava, image, user_message, vlm, words_for  # noqa: F401, F811
from vlmforge.runtime import Conversation, SamplingParams, VisionLanguageModel, apply_stop
from vlmforge.serve.app import create_app
from vlmforge.serve.batcher import Delta, Done, DynamicBatcher, Job, batch_key
from vlmforge.serve.runner import ServerThread
from vlmforge.serve.settings import ServeSettings
from vlmforge.serve.streaming import StreamText

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 0), (0, 200, 200), (90, 0, 90), (0, 0, 0), (255, 255, 255)]
QUESTIONS = ["what colour is it?", "what is this?", "how many objects?", "describe it"]


def _requests():
    return [(QUESTIONS[i % len(QUESTIONS)], image(c, (30 + 3 * i, 30))) for i, c in enumerate(COLOURS)]


@pytest.fixture(scope="module")
def batched_server(vlm):  # noqa: F811
    sizes: list[int] = []
    # a wide window so that 8 requests fired together reliably meet in the queue
    batcher = DynamicBatcher(vlm, max_batch_size=8, window_ms=300, on_batch=sizes.append)
    with ServerThread(create_app(vlm, ServeSettings(), ui=False, batcher=batcher)) as running:
        yield running, sizes


async def _fire(url: str, name: str, stream: bool) -> list[str]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0)

    async def one(question, img):
        kwargs = {"model": name, "messages": [user_message(question, img)], "temperature": 0, "max_tokens": 10}
        if not stream:
            return (await client.chat.completions.create(**kwargs)).choices[0].message.content
        chunks = await client.chat.completions.create(stream=True, **kwargs)
        return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])

    async with client:
        return await asyncio.gather(*(one(q, i) for q, i in _requests()))


@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
def test_concurrent_requests_are_batched_and_answer_as_if_alone(batched_server, vlm, stream):  # noqa: F811
    server, sizes = batched_server
    sizes.clear()
    answers = asyncio.run(_fire(server.url, vlm.name, stream))
    alone = [
        vlm.generate([Conversation.single_turn(q, [i])], SamplingParams(max_new_tokens=10))[0].text
        for q, i in _requests()
    ]
    assert max(sizes) > 1 and sum(sizes) == len(alone)
    assert answers == alone
    assert len(set(alone)) > 1  # different inputs, different answers: rows were not mixed up


def test_only_compatible_requests_share_a_batch():
    greedy = SamplingParams(max_new_tokens=8)
    assert batch_key(greedy, False) == batch_key(SamplingParams(max_new_tokens=8), False)
    assert batch_key(greedy, False) != batch_key(greedy, True)
    assert batch_key(greedy, False) != batch_key(SamplingParams(max_new_tokens=9), False)
    assert batch_key(greedy, False) != batch_key(SamplingParams(max_new_tokens=8, temperature=0.7), False)
    seeded = SamplingParams(max_new_tokens=8, temperature=0.7, seed=1)
    assert batch_key(seeded, False) != batch_key(seeded, False)  # a seeded sample always runs alone
    # an engine that cuts each row at its own max_new_tokens batches them whatever their lengths
    assert batch_key(greedy, False, mixed_lengths=True) == batch_key(SamplingParams(max_new_tokens=9), False, True)
    assert batch_key(greedy, False, True) != batch_key(SamplingParams(max_new_tokens=9, stop=["."]), False, True)


def test_requests_with_different_settings_go_to_different_batches():
    engine = FakeEngine()
    seen: list[tuple[int, float]] = []
    original = engine.generate

    def recording(conversations, params):
        seen.append((len(conversations), params.temperature))
        return original(conversations, params)

    engine.generate = recording
    batcher = DynamicBatcher(engine, max_batch_size=8, window_ms=200)
    conv = Conversation.single_turn("hi")

    async def fire():
        jobs = [batcher.submit(conv, SamplingParams(temperature=t)) for t in (0.0, 0.5, 0.0, 0.5, 0.0)]
        return await asyncio.gather(*(job.result() for job in jobs))

    try:
        assert len(asyncio.run(fire())) == 5
    finally:
        batcher.close()
    assert sorted(seen) == [(2, 0.5), (3, 0.0)]


@settings(max_examples=300, deadline=None)
@example(text=".a b.bc", cuts=[2], stop=["a", ".a "])  # a shorter stop string matched first; a longer one began earlier
@example(text="cb  ", cuts=[3], stop=["b  ", " "])
@given(
    text=st.text(alphabet=" ab\nc.", max_size=30),
    cuts=st.lists(st.integers(0, 30), max_size=8),
    stop=st.lists(st.text(alphabet="abc. ", min_size=1, max_size=3), max_size=2),
)
def test_stream_text_releases_exactly_the_generated_text(text, cuts, stop):
    bounds = sorted({0, len(text), *[min(c, len(text)) for c in cuts]})
    stream = StreamText(stop)
    released = "".join(stream.feed(text[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)) + stream.finish()
    assert released == apply_stop(text, stop)[0].strip()


def test_a_batch_waits_while_company_keeps_arriving():
    engine = FakeEngine()
    sizes: list[int] = []
    batcher = DynamicBatcher(engine, max_batch_size=8, window_ms=400, on_batch=sizes.append)
    conv = Conversation.single_turn("hi")

    async def trickle():
        jobs = []
        for _ in range(3):  # each arrives within a window of the previous one, the last after the first window
            jobs.append(batcher.submit(conv, SamplingParams()))
            await asyncio.sleep(0.25)
        return await asyncio.gather(*(job.result() for job in jobs))

    try:
        assert len(asyncio.run(trickle())) == 3
    finally:
        batcher.close()
    assert sizes == [3]


def test_only_rotary_positions_let_rows_run_past_their_context():
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    tiny = {"vocab_size": 99, "num_hidden_layers": 1, "num_attention_heads": 2}
    rotary = Qwen2ForCausalLM(Qwen2Config(hidden_size=32, intermediate_size=64, num_key_value_heads=2, **tiny))
    learned = GPT2LMHeadModel(GPT2Config(n_embd=32, n_positions=64, **tiny))
    assert VisionLanguageModel(rotary, SimpleNamespace()).mixed_lengths
    assert not VisionLanguageModel(learned, SimpleNamespace()).mixed_lengths


async def _answer(job: Job) -> tuple[str, object]:
    """What a client sees: the streamed text (empty when not streaming) and the final completion."""
    text = ""
    async for event in job.events():
        if isinstance(event, Delta):
            text += event.text
        elif isinstance(event, Done):
            return text, event.completion
        else:
            raise event.error
    raise AssertionError("no result")


@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
def test_rows_of_different_lengths_share_a_batch_and_answer_as_if_alone(vlm, stream):  # noqa: F811
    rows = [
        (Conversation.single_turn("hi", [image((255, 0, 0))]), 3),
        (Conversation.single_turn("describe it " * 10, [image((0, 0, 255))]), 16),
        (Conversation.single_turn("how many objects?", [image((250, 250, 0))]), 9),
    ]
    # a stop string from the longest row's own answer, so that one row ends before its max_new_tokens
    longest = vlm.generate([rows[1][0]], SamplingParams(max_new_tokens=16))[0].text
    stop = [longest[len(longest) // 2 :][:2]]
    sizes: list[int] = []
    # any lengths may share a batch here: this is about cutting rows, test_serve_length_ratio about bounding them
    batcher = DynamicBatcher(vlm, max_batch_size=8, window_ms=300, on_batch=sizes.append, max_length_ratio=float("inf"))

    async def together():
        jobs = [batcher.submit(c, SamplingParams(max_new_tokens=n, stop=stop), stream) for c, n in rows]
        return await asyncio.gather(*(_answer(job) for job in jobs))

    async def alone():
        return [await _answer(batcher.submit(c, SamplingParams(max_new_tokens=n, stop=stop), stream)) for c, n in rows]

    try:
        batched = asyncio.run(together())
        assert sizes == [3]
        assert batched == asyncio.run(alone())
    finally:
        batcher.close()
    completions = [completion for _, completion in batched]
    assert completions[1].finish_reason == "stop" and completions[1].completion_tokens < 16
    assert completions[0].completion_tokens <= 3 < max(c.completion_tokens for c in completions)
    for (conversation, n), (text, completion) in zip(rows, batched, strict=True):
        runtime = vlm.generate([conversation], SamplingParams(max_new_tokens=n, stop=stop))[0]
        assert (text if stream else completion.text) == runtime.text
        if not stream:
            assert completion == runtime


async def _chat(client: httpx.AsyncClient, vlm, text: str, img, stream: bool) -> tuple[str, str, dict]:  # noqa: F811
    """(answer, finish reason, usage) of a request without max_tokens."""
    body = {"model": vlm.name, "messages": [user_message(text, img)], "temperature": 0}
    if not stream:
        reply = (await client.post("/v1/chat/completions", json=body)).json()
        choice = reply["choices"][0]
        return choice["message"]["content"], choice["finish_reason"], reply["usage"]
    body.update(stream=True, stream_options={"include_usage": True})
    answer, finish, usage = "", "", {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        async for line in reply.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: ") :])
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                answer += choice["delta"].get("content") or ""
                finish = choice.get("finish_reason") or finish
    return answer, finish, usage


@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
def test_default_answers_cut_to_the_context_still_share_a_batch(vlm, stream):  # noqa: F811
    """Without max_tokens a prompt that nearly fills the context gets a smaller budget than a short one; the two
    still run as one batch (their budgets within the default --max-length-ratio), and the long one stops where its
    context ends, as it would alone."""
    red, blue = image((220, 30, 30)), image((0, 0, 200))
    questions = [(words_for(vlm, 6, red), red), ("what colour is it?", blue)]
    sizes: list[int] = []
    batcher = DynamicBatcher(vlm, max_batch_size=8, window_ms=300, on_batch=sizes.append)
    settings = ServeSettings(batching="dynamic", default_max_tokens=24)

    async def fire(together: bool):
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            if together:
                return await asyncio.gather(*(_chat(client, vlm, q, i, stream) for q, i in questions))
            return [await _chat(client, vlm, q, i, stream) for q, i in questions]

    with ServerThread(create_app(vlm, settings, ui=False, batcher=batcher)) as server:
        batched = asyncio.run(fire(together=True))
        assert sizes == [2]
        assert batched == asyncio.run(fire(together=False))
    (_, _, long_usage), (_, _, short_usage) = batched
    assert long_usage["prompt_tokens"] == vlm.context - 6 and long_usage["completion_tokens"] <= 6
    assert short_usage["completion_tokens"] > 6  # the batch ran past the long prompt's budget
    for (question, img), (answer, finish, usage), budget in zip(questions, batched, (6, 24), strict=True):
        runtime = vlm.generate([Conversation.single_turn(question, [img])], SamplingParams(max_new_tokens=budget))[0]
        assert answer == runtime.text and finish == runtime.finish_reason
        if not stream:
            assert usage["completion_tokens"] == runtime.completion_tokens
