"""Dynamic batching: concurrent requests share batches and still get their one-at-a-time answers."""

import asyncio

import openai
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from serve_support import FakeEngine, chatty_llava, image, user_message, vlm  # noqa: F401, F811
from vlmforge.runtime import Conversation, SamplingParams, apply_stop
from vlmforge.serve.app import create_app
from vlmforge.serve.batcher import DynamicBatcher, batch_key
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
