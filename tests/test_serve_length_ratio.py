"""Dynamic batching's --max-length-ratio: a short non-streamed request does not wait for a much longer batch mate."""

import argparse
import asyncio
import time

import httpx
import pytest

from serve_support import FakeEngine, chatty_llava, image, user_message, vlm  # noqa: F401, F811
from vlmforge.errors import ConfigError
from vlmforge.runtime import Completion, Conversation, SamplingParams
from vlmforge.serve.app import create_app
from vlmforge.serve.batcher import DynamicBatcher, fits_lengths
from vlmforge.serve.continuous import make_batcher
from vlmforge.serve.runner import ServerThread
from vlmforge.serve.settings import ServeSettings, add_arguments, from_args

CONVERSATION = Conversation.single_turn("hi")


class LengthEngine(FakeEngine):
    """Cuts each row at its own length, as a rotary model does; records each call's start and its rows' lengths."""

    mixed_lengths = True

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[float, list[int]]] = []

    def generate(self, conversations, params, lengths=None):
        self.calls.append((time.perf_counter(), list(lengths or [params.max_new_tokens] * len(conversations))))
        return [Completion("ok", 5, n, "length") for n in self.calls[-1][1]]

    def stream(self, conversations, params):  # the batch's longest length for every row: streams cut rows themselves
        self.calls.append((time.perf_counter(), [params.max_new_tokens] * len(conversations)))
        yield ["ok"] * len(conversations)


def _run(engine: LengthEngine, budgets: list[int], stream: bool = False, **options) -> list:
    """Submit one request per budget, oldest first, all inside one batch window; the jobs once all are answered."""
    batcher = DynamicBatcher(engine, max_batch_size=8, window_ms=200, **options)

    async def fire():
        jobs = [batcher.submit(CONVERSATION, SamplingParams(max_new_tokens=n), stream) for n in budgets]
        await asyncio.gather(*(job.result() for job in jobs))
        return jobs

    try:
        return asyncio.run(fire())
    finally:
        batcher.close()


def _batches(engine: LengthEngine) -> list[list[int]]:
    return [lengths for _, lengths in engine.calls]


def test_a_short_request_is_answered_before_a_long_one_starts():
    engine = LengthEngine()
    short, _ = _run(engine, [16, 512])  # the default ratio, 4
    assert _batches(engine) == [[16], [512]]
    assert short.done_at < engine.calls[1][0]  # answered before the long request's generation began


def test_requests_within_the_ratio_share_a_batch():
    engine = LengthEngine()
    _run(engine, [16, 64, 40, 512], max_length_ratio=4)
    assert _batches(engine) == [[16, 64, 40], [512]]
    engine = LengthEngine()
    _run(engine, [16, 512], max_length_ratio=32)
    assert _batches(engine) == [[16, 512]]


def test_the_batch_bound_is_its_longest_over_its_shortest():
    engine = LengthEngine()
    _run(engine, [16, 64, 8, 12], max_length_ratio=4)  # 8 is within 4x of 16 but not of 64, which joined first
    assert _batches(engine) == [[16, 64], [8, 12]]
    assert fits_lengths(16, 64, 16, 4) and not fits_lengths(16, 64, 8, 4) and not fits_lengths(16, 16, 65, 4)


def test_the_oldest_waiting_request_heads_the_next_batch():
    engine = LengthEngine()
    _run(engine, [512, 16, 400, 16, 600, 100], max_length_ratio=4)
    assert _batches(engine) == [[512, 400, 600], [16, 16], [100]]


@pytest.mark.parametrize("ratio", [None, 0, 1], ids=["default", "zero", "one"])
def test_equal_budgets_always_share_a_batch(ratio):
    engine = LengthEngine()
    _run(engine, [16, 16, 16], **({} if ratio is None else {"max_length_ratio": ratio}))
    assert _batches(engine) == [[16, 16, 16]]
    if ratio is not None:  # 0 and 1: only equal budgets
        engine = LengthEngine()
        _run(engine, [16, 17, 16], max_length_ratio=ratio)
        assert _batches(engine) == [[16, 16], [17]]


def test_streamed_requests_share_a_batch_whatever_their_budgets():
    engine = LengthEngine()
    _run(engine, [16, 512], stream=True, max_length_ratio=1)  # each streamed row is answered at its own length
    assert [len(rows) for rows in _batches(engine)] == [2]


def test_the_ratio_is_a_server_option_and_a_negative_one_is_refused():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_args(parser.parse_args(["--model", "m"])).max_length_ratio == 4
    assert from_args(parser.parse_args(["--model", "m", "--max-length-ratio", "0"])).max_length_ratio == 1
    assert from_args(parser.parse_args(["--model", "m", "--max-length-ratio", "inf"])).max_length_ratio == float("inf")
    for bad in ("-1", "nan"):
        with pytest.raises(ConfigError, match="--max-length-ratio must be 0 or more"):
            from_args(parser.parse_args(["--model", "m", "--max-length-ratio", bad]))
    with pytest.raises(ConfigError, match="--max-length-ratio"):
        DynamicBatcher(FakeEngine(), max_length_ratio=-0.5)
    assert make_batcher(FakeEngine(), ServeSettings(max_length_ratio=2.5)).max_length_ratio == 2.5


def test_a_served_short_request_does_not_wait_for_a_long_one(vlm):  # noqa: F811
    """Over HTTP with the real model: a 16-token request and a 512-token one that arrive together run as two
    batches, and the short one is answered first."""
    batcher = make_batcher(vlm, ServeSettings(batching="dynamic", batch_window_ms=300))
    sizes: list[int] = []
    batcher.on_batch = sizes.append
    finished: list[int] = []

    async def ask(client: httpx.AsyncClient, max_tokens: int) -> None:
        body = {"model": vlm.name, "messages": [user_message("describe it", image((0, 0, 200)))], "temperature": 0}
        reply = await client.post("/v1/chat/completions", json={**body, "max_tokens": max_tokens})
        assert reply.status_code == 200, reply.text
        finished.append(max_tokens)

    async def fire():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            short = asyncio.create_task(ask(client, 16))
            while batcher.waiting == 0:  # the short request is queued first, so it heads the batch
                await asyncio.sleep(0.005)
            await asyncio.gather(short, ask(client, 512))

    with ServerThread(create_app(vlm, ServeSettings(batching="dynamic"), ui=False, batcher=batcher)) as server:
        asyncio.run(fire())
    assert sizes == [1, 1]
    assert finished == [16, 512]
