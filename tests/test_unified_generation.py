"""CFG image sampling: one batch equals two passes and a cache-free reference, exactly N codes, clear errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import Qwen2Config, Qwen2ForCausalLM

from vlmforge.errors import ConfigError
from vlmforge.models.unified import UnifiedSpec, build_unified
from vlmforge.models.unified.generation import (
    ImageSampling,
    generate_image_codes,
    generate_images,
    image_prompts,
)
from vlmforge.models.unified.prompts import INSTRUCTION
from vlmforge.testing.tiny import tiny_tokenizer

CAPTIONS = ["a red circle", "two blue squares and a green triangle"]


@pytest.fixture(scope="module")
def built():
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    )  # fmt: skip
    spec = UnifiedSpec(arm="two_end", encode_layers=1, decode_layers=1, codebook_size=12, image_grid=(2, 3))
    model, tokenizer = build_unified(lm, tokenizer, spec)
    # Distinct vision copies, so a routing mistake would change the codes.
    with torch.no_grad():
        for layer in model.vision_layers:
            layer.mlp.down_proj.weight.mul_(-3.0)
    return model.eval(), tokenizer


def reference_codes(model, tokenizer, captions, cfg):
    """Greedy CFG without any cache or batching: every step re-reads both full sequences."""
    conditional, unconditional = image_prompts(tokenizer, model.config, captions)
    text = model.config.text_vocab_size
    out = []
    for cond in conditional:
        c_seq, u_seq, codes = list(cond), list(unconditional), []
        for _ in range(model.config.image_seq_length):
            with torch.no_grad():
                c = model(torch.tensor([c_seq]), use_cache=False).logits[0, -1]
                u = model(torch.tensor([u_seq]), use_cache=False).logits[0, -1]
            mixed = u + cfg * (c - u)
            mixed[:text] = -float("inf")
            token = int(mixed.argmax())
            codes.append(token - text)
            c_seq.append(token)
            u_seq.append(token)
        out.append(codes)
    return torch.tensor(out)


@pytest.mark.parametrize("cfg", [0.0, 3.0])
def test_one_batch_equals_two_passes_and_the_reference(built, cfg):
    model, tokenizer = built
    sampling = ImageSampling(cfg=cfg, temperature=0)
    one = generate_image_codes(model, tokenizer, CAPTIONS, sampling)
    two = generate_image_codes(model, tokenizer, CAPTIONS, sampling, one_batch=False)
    assert one.shape == (2, 6)
    assert one.tolist() == two.tolist() == reference_codes(model, tokenizer, CAPTIONS, cfg).tolist()


def test_sampling_draws_exactly_n_codes_in_range_and_is_seeded(built):
    model, tokenizer = built
    sampling = ImageSampling(cfg=2.0, temperature=1.0, top_k=5, top_p=0.9, seed=7)
    a = generate_image_codes(model, tokenizer, CAPTIONS * 2, sampling)
    b = generate_image_codes(model, tokenizer, CAPTIONS * 2, sampling)
    assert a.shape == (4, 6) and a.min() >= 0 and a.max() < 12
    assert a.tolist() == b.tolist()


def test_prompts_follow_uni_x(built):
    model, tokenizer = built
    conditional, unconditional = image_prompts(tokenizer, model.config, ["a red circle"])
    assert tokenizer.decode(conditional[0]) == "a red circle" + INSTRUCTION + "<|vision_start|>"
    assert tokenizer.convert_ids_to_tokens(unconditional) == ["<unconditional>", "<|vision_start|>"]


class FakeImageTokenizer:
    """Paints each code as a grey level: enough to check the decode step's plumbing."""

    def __init__(self, codebook_size=12, grid=(2, 3)):
        self.codebook_size, self.grid = codebook_size, grid

    def encode(self, images):
        raise NotImplementedError

    def decode(self, codes):
        return [Image.new("L", (3, 2)).convert("RGB") for _ in codes]


def test_generate_images_decodes_one_image_per_caption(built):
    model, tokenizer = built
    images = generate_images(model, tokenizer, FakeImageTokenizer(), CAPTIONS, ImageSampling(temperature=0))
    assert len(images) == 2 and images[0].mode == "RGB"


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        (ImageSampling(cfg=-1.0), "cfg must be >= 0"),
        (ImageSampling(temperature=-0.5), "temperature must be >= 0"),
        (ImageSampling(top_k=0), "top_k must be >= 1"),
        (ImageSampling(top_p=0.0), r"top_p must be in \(0, 1\]"),
    ],
)
def test_bad_sampling_is_a_clear_error(built, sampling, message):
    model, tokenizer = built
    with pytest.raises(ValueError, match=message):
        generate_image_codes(model, tokenizer, CAPTIONS, sampling)


def test_prompt_longer_than_the_context_is_a_clear_error(built):
    model, tokenizer = built
    with pytest.raises(ValueError, match=r"plus 6 image codes exceeds the model's context of 64 tokens"):
        generate_image_codes(model, tokenizer, ["a red circle " * 30], ImageSampling(temperature=0))


@pytest.mark.parametrize(
    ("tokenizer", "message"),
    [
        (FakeImageTokenizer(codebook_size=16), "the image tokenizer has 16 codes but the model holds 12"),
        (FakeImageTokenizer(grid=(3, 2)), r"makes a \(3, 2\) code grid but the model draws \(2, 3\)"),
    ],
)
def test_image_tokenizer_that_does_not_fit_is_a_clear_error(built, tokenizer, message):
    model, text_tokenizer = built
    with pytest.raises(ConfigError, match=message):
        generate_images(model, text_tokenizer, tokenizer, CAPTIONS)
