"""Continuous batching: rows join and leave a running decode batch and still get generate's answers."""

import argparse
import asyncio
import gc
import threading

import pytest
import torch

from serve_support import FakeEngine, chatty_llava, image, vlm  # noqa: F401, F811
from vlmforge.errors import ConfigError
from vlmforge.runtime import Conversation, SamplingParams
from vlmforge.serve.batcher import Delta, Done, DynamicBatcher, Failed, freeze_heap
from vlmforge.serve.continuous import ContinuousBatcher, make_batcher
from vlmforge.serve.running_batch import RowSampling, RunningBatch, Sampler, stepwise_support
from vlmforge.serve.settings import ServeSettings, add_arguments, from_args
from vlmforge.serve.timings import StageTimings

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 0), (0, 200, 200), (90, 0, 90)]
QUESTIONS = ["what colour is it?", "what is this?", "how many objects are there in this picture?", "describe it"]


def _conversation(i: int) -> Conversation:
    """Prompts of different lengths (question and image size vary)."""
    return Conversation.single_turn(QUESTIONS[i % len(QUESTIONS)], [image(COLOURS[i], (30 + 3 * i, 30))])


def _generated_ids(vlm, conversation: Conversation, max_new_tokens: int) -> list[int]:  # noqa: F811
    inputs = vlm.prepare([conversation])
    kwargs = vlm._generate_kwargs(SamplingParams(max_new_tokens=max_new_tokens))
    with torch.inference_mode():
        out = vlm.model.generate(**inputs, **kwargs)
    return _until_eos(out[0, inputs["input_ids"].shape[1] :].tolist(), vlm.tokenizer.eos_token_id)


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def test_the_running_batch_decodes_generates_tokens_as_rows_join_and_leave(vlm):  # noqa: F811
    steps = 10
    batch = RunningBatch(vlm.model, Sampler(vlm.model.generation_config, vlm.device))
    rows, got = [0, 1], {i: [] for i in range(5)}
    first = batch.prefill(vlm.prepare([_conversation(0), _conversation(1)]), [RowSampling()] * 2)
    for row, token in zip(rows, first.tolist(), strict=True):
        got[row].append(token)
    for step in range(steps - 1):
        if step == 2:  # three rows of other prompt lengths join mid-decode
            joining = [_conversation(i) for i in (2, 3, 4)]
            for row, token in zip((2, 3, 4), batch.prefill(vlm.prepare(joining), [RowSampling()] * 3), strict=True):
                got[row].append(int(token))
            rows += [2, 3, 4]
        if step == 5:  # the first row leaves; the others go on
            batch.keep([1, 2, 3, 4])
            rows = rows[1:]
        for row, token in zip(rows, batch.step().tolist(), strict=True):
            got[row].append(token)
    eos = vlm.tokenizer.eos_token_id
    for row in range(5):
        expected = _generated_ids(vlm, _conversation(row), len(got[row]))
        assert _until_eos(got[row], eos) == expected
    assert len(set(map(tuple, got.values()))) == 5


def test_sampled_rows_do_not_change_the_greedy_rows_beside_them(vlm):  # noqa: F811
    batch = RunningBatch(vlm.model, Sampler(vlm.model.generation_config, vlm.device))
    settings = [RowSampling(), RowSampling(0.8, 0.9), RowSampling(), RowSampling(1.5, 1.0)]
    torch.manual_seed(0)
    got = [[int(t)] for t in batch.prefill(vlm.prepare([_conversation(i) for i in range(4)]), settings)]
    for _ in range(7):
        for row, token in zip(got, batch.step().tolist(), strict=True):
            row.append(token)
    for i in (0, 2):
        assert _until_eos(got[i], vlm.tokenizer.eos_token_id) == _generated_ids(vlm, _conversation(i), 8)
    vocab = vlm.model.config.get_text_config().vocab_size
    suppressed = set(vlm.model.generation_config.suppress_tokens)
    assert all(0 <= t < vocab and t not in suppressed for row in got for t in row)


async def _collect(job) -> tuple[str, object]:
    """(streamed text, the final Done or Failed)."""
    text = ""
    async for event in job.events():
        if isinstance(event, Delta):
            text += event.text
        else:
            return text, event
    raise AssertionError("no final event")


def _run(batcher, requests, on_started=None):
    """Submit (conversation, params, stream) requests; return each one's (streamed text, final event)."""

    async def main():
        jobs = [batcher.submit(c, p, stream=s) for c, p, s in requests]
        return await asyncio.gather(*(_collect(job) for job in jobs))

    try:
        return asyncio.run(main())
    finally:
        batcher.close()


def test_requests_of_every_kind_get_generates_answers(vlm):  # noqa: F811
    params = [
        SamplingParams(max_new_tokens=12),
        SamplingParams(max_new_tokens=4),  # ends early: finish_reason "length" after 4 tokens
        SamplingParams(max_new_tokens=9),
        SamplingParams(max_new_tokens=12),
    ]
    alone = [vlm.generate([_conversation(i)], p)[0] for i, p in enumerate(params)]
    stop = alone[2].text[3:5]  # a stop string from the middle of an answer
    params[2] = SamplingParams(max_new_tokens=9, stop=[stop])
    alone[2] = vlm.generate([_conversation(2)], params[2])[0]
    requests = [
        (_conversation(i), p, stream)
        for i, (p, stream) in enumerate(zip(params, [False, True, True, False], strict=True))
    ]
    results = _run(ContinuousBatcher(vlm, max_batch_size=8, window_ms=300), requests)
    for (streamed, final), expected, (_, _, stream) in zip(results, alone, requests, strict=True):
        assert isinstance(final, Done)
        assert final.completion == expected
        assert streamed == (expected.text if stream else "")
    assert [c.finish_reason for c in alone] == ["length", "length", "stop", "length"]
    assert alone[1].completion_tokens == 4 and stop not in alone[2].text


def test_a_request_arriving_during_decoding_joins_before_the_batch_finishes(vlm):  # noqa: F811
    steps: list[list[int]] = []
    at_second_step, joined = threading.Event(), threading.Event()
    ids: dict[int, str] = {}

    def on_step(jobs):
        steps.append([ids.get(id(job)) for job in jobs])
        if len(steps) == 2:
            at_second_step.set()
            joined.wait(timeout=30)  # hold the batch here until the late request is queued

    batcher = ContinuousBatcher(vlm, max_batch_size=2, on_step=on_step)

    async def main():
        early = batcher.submit(_conversation(0), SamplingParams(max_new_tokens=14))
        ids[id(early)] = "early"
        finished: list[str] = []

        async def wait(job, name):
            await job.result()
            finished.append(name)

        first = asyncio.create_task(wait(early, "early"))
        await asyncio.to_thread(at_second_step.wait, 30)
        late = batcher.submit(_conversation(1), SamplingParams(max_new_tokens=3))
        ids[id(late)] = "late"
        joined.set()
        await asyncio.gather(first, wait(late, "late"))
        return finished

    try:
        finished = asyncio.run(main())
    finally:
        batcher.close()
    assert finished == ["late", "early"]  # the late, short request did not wait for the long one to drain
    shared = [i for i, names in enumerate(steps) if set(names) == {"early", "late"}]
    assert shared and steps[shared[-1] + 1] == ["early"]


def test_a_bad_image_fails_only_its_own_request(vlm):  # noqa: F811
    bad = Conversation([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}], [])
    good = [_conversation(0), _conversation(3)]
    params = SamplingParams(max_new_tokens=6)
    requests = [(good[0], params, False), (bad, params, False), (good[1], params, True)]
    results = _run(ContinuousBatcher(vlm, max_batch_size=8, window_ms=300), requests)
    assert isinstance(results[1][1], Failed)
    for (_, final), conversation in zip([results[0], results[2]], good, strict=True):
        assert isinstance(final, Done) and final.completion == vlm.generate([conversation], params)[0]


def test_a_client_that_leaves_frees_its_row(vlm):  # noqa: F811
    steps: list[int] = []
    batcher = ContinuousBatcher(vlm, max_batch_size=4, window_ms=300, on_step=lambda jobs: steps.append(len(jobs)))

    async def main():
        leaving = batcher.submit(_conversation(0), SamplingParams(max_new_tokens=30), stream=True)
        staying = batcher.submit(_conversation(1), SamplingParams(max_new_tokens=30))
        events = leaving.events()
        assert isinstance(await anext(events), Delta)
        await events.aclose()  # the client disconnects after its first words
        return await staying.result()

    try:
        completion = asyncio.run(main())
    finally:
        batcher.close()
    assert completion == vlm.generate([_conversation(1)], SamplingParams(max_new_tokens=30))[0]
    assert steps[0] == 2 and steps[-1] == 1  # the leaver's row went, the other one decoded on alone


def test_continuous_batching_is_the_default_where_the_model_supports_it(vlm):  # noqa: F811
    assert stepwise_support(vlm) is None
    assert isinstance(make_batcher(vlm, ServeSettings()), ContinuousBatcher)
    assert isinstance(make_batcher(vlm, ServeSettings(batching="dynamic")), DynamicBatcher)
    assert stepwise_support(FakeEngine()) is not None
    assert isinstance(make_batcher(FakeEngine(), ServeSettings()), DynamicBatcher)
    with pytest.raises(ConfigError, match="--batching dynamic"):
        make_batcher(FakeEngine(), ServeSettings(batching="continuous"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_args(parser.parse_args(["--model", "m"])).batching is None
    assert from_args(parser.parse_args(["--model", "m", "--batching", "dynamic"])).batching == "dynamic"
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--batching", "static"])


def test_profiled_continuous_batching_reports_its_stages(vlm):  # noqa: F811
    timings = StageTimings()
    batcher = ContinuousBatcher(vlm, max_batch_size=4, window_ms=300)
    batcher.time_stages(timings)
    try:
        params = SamplingParams(max_new_tokens=5)
        results = _run(batcher, [(_conversation(0), params, False), (_conversation(1), params, True)])
    finally:
        vlm.observe(None)
    assert all(isinstance(final, Done) for _, final in results)
    report = timings.report()
    assert report["batches"] == 1 and report["mean_batch_size"] == 2
    stages = report["stages"]
    for stage in ["queue", "template", "tokenize", "image_processor", "vision", "prefill", "decode", "rebatch"]:
        assert stages[stage]["busy_ms"] > 0, stage
    # both rows lived through every step and the prefill, which ran once
    assert stages["decode"]["wall_ms"] == pytest.approx(2 * stages["decode"]["busy_ms"])
    assert stages["prefill"]["wall_ms"] == pytest.approx(2 * stages["prefill"]["busy_ms"])


def test_a_batcher_leaves_the_loaded_heap_out_of_garbage_collection_once():
    DynamicBatcher(FakeEngine())
    frozen = gc.get_freeze_count()
    assert frozen > 0  # the objects alive when the server starts are no longer walked by full collections
    freeze_heap()
    DynamicBatcher(FakeEngine())
    assert gc.get_freeze_count() == frozen  # later objects (requests, caches) stay collectable
