"""Generation backends: the local HF generator's batching/padding/determinism and the OpenAI client's retries."""

from __future__ import annotations

import pytest
import torch

from synth_fakes import FakeOpenAIServer, answer
from vlmforge.errors import ConfigError
from vlmforge.synth.backends import GenerationFailure, LocalHFGenerator, OpenAIGenerator, make_generator

PROMPTS = [
    [{"role": "user", "content": "a red circle"}],
    [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "two blue squares and a green triangle"},
    ],
    [{"role": "user", "content": "How many objects are there? Is there a yellow star in the image?"}],
]


@pytest.fixture(scope="module")
def lively_lm(tiny_parts, tmp_path_factory):
    """The tiny LM with scaled-up weights, so greedy output depends on the prompt (random init mostly repeats
    one token, which would make batched-vs-single comparisons vacuous)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, lm_dir = tiny_parts
    model = AutoModelForCausalLM.from_pretrained(lm_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("lively") / "lm"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(lm_dir).save_pretrained(out)
    return str(out)


def test_local_batched_left_padded_equals_one_by_one(lively_lm):
    gen = LocalHFGenerator(lively_lm, batch_size=3, device="cpu")
    assert gen.tokenizer.padding_side == "left"
    batched = gen.generate(PROMPTS, max_new_tokens=6, temperature=0.0, seed=0)
    single = [gen.generate([p], max_new_tokens=6, temperature=0.0, seed=0)[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) > 1, "outputs should depend on the prompt"
    # The chat template is applied: the prompt text itself is not echoed back in the completion.
    assert all("<|im_start|>" not in t for t in batched)


def test_local_greedy_is_deterministic_and_sampling_is_seeded(lively_lm):
    gen = LocalHFGenerator(lively_lm, batch_size=2, device="cpu")
    kw = {"max_new_tokens": 8}
    assert gen.generate(PROMPTS, temperature=0.0, seed=1, **kw) == gen.generate(PROMPTS, temperature=0.0, seed=2, **kw)
    a = gen.generate(PROMPTS, temperature=1.5, seed=7, **kw)
    assert a == gen.generate(PROMPTS, temperature=1.5, seed=7, **kw)
    samples = {tuple(gen.generate(PROMPTS, temperature=1.5, seed=s, **kw)) for s in range(4)}
    assert len(samples) > 1


def _openai(server: FakeOpenAIServer, **kw) -> OpenAIGenerator:
    kw = {"concurrency": 4, "max_retries": 2, "timeout": 0.5, "backoff_base": 0.01, **kw}
    return OpenAIGenerator(server.base_url, "fake-model", **kw)


def _msgs(caption: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Describe.\n\nCaption: {caption}"}]


def test_openai_in_order_with_retries_on_timeout_and_5xx():
    with FakeOpenAIServer() as server:
        gen = _openai(server)
        captions = ["a cat", "[SLOW] a dog", "[500] a bird", "a fish", "[DOWN] a cow"]
        out = gen.generate([_msgs(c) for c in captions], max_new_tokens=32, temperature=0.0, seed=3)
        hits = dict(server.hits)
    for caption, text in zip(captions[:4], out[:4], strict=True):
        assert text == answer(_msgs(caption), 3)  # order kept, content correct
    assert hits[("[SLOW] a dog", 3)] == 2  # first timed out, retried
    assert hits[("[500] a bird", 3)] == 2  # first 500, retried
    assert hits[("a cat", 3)] == 1
    assert isinstance(out[4], GenerationFailure) and out[4].attempts == 3  # 1 try + 2 retries, then given up
    assert hits[("[DOWN] a cow", 3)] == 3


def test_openai_does_not_retry_client_errors():
    with FakeOpenAIServer() as server:
        gen = OpenAIGenerator(server.base_url.replace("/v1", "/nope"), "m", max_retries=3, backoff_base=0.01)
        (out,) = gen.generate([_msgs("x")], max_new_tokens=8, temperature=0.0, seed=0)
    assert isinstance(out, GenerationFailure) and out.attempts == 1 and out.reason == "NotFoundError"


def test_factory():
    gen = make_generator({"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "concurrency": 3})
    assert isinstance(gen, OpenAIGenerator) and gen.concurrency == 3 and "m" in gen.name
    with pytest.raises(ConfigError, match="base-url"):
        make_generator({"backend": "openai", "model": "m"})
    with pytest.raises(ConfigError, match="unknown backend"):
        make_generator({"backend": "tpu"})
    with pytest.raises(ConfigError):
        make_generator({"backend": "local", "model": "/does/not/exist"})
