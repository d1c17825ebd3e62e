"""The unified model's sample layouts: what is trained, what is masked, and that inference asks in the layout
training used."""

from __future__ import annotations

import pytest

from vlmforge.data.chat import IGNORE_INDEX
from vlmforge.errors import ConfigError
from vlmforge.models.unified import UnifiedSpec, unified_from_pretrained_lm
from vlmforge.models.unified.prompts import (
    generation_prefix,
    generation_sample,
    image_span,
    text_sample,
    understanding_sample,
)
from vlmforge.testing.tiny import save_tiny_lm


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    lm_dir = save_tiny_lm(tmp_path_factory.mktemp("prompts_lm") / "lm", hidden=32, layers=2)
    model, tokenizer = unified_from_pretrained_lm(
        str(lm_dir), UnifiedSpec(arm="shared", codebook_size=8, image_grid=(1, 3))
    )
    return model.config, tokenizer


def test_understanding_trains_only_the_answer_and_its_end_of_turn(built):
    config, tokenizer = built
    ids, labels = understanding_sample(tokenizer, config, [0, 7, 2], "What colour?", "red")
    prompt, prompt_labels = understanding_sample(tokenizer, config, [0, 7, 2], "What colour?")
    assert ids[: len(prompt)] == prompt and set(prompt_labels) == {IGNORE_INDEX}
    span = image_span(config, [0, 7, 2])
    start = ids.index(config.vision_start_token_id)
    assert (
        ids[start : start + 5]
        == span
        == [config.vision_start_token_id, *(config.text_vocab_size + c for c in (0, 7, 2)), config.vision_end_token_id]
    )
    trained = [t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    assert trained == ids[len(prompt) :] and tokenizer.decode(trained).startswith("red")
    assert "<|im_end|>" in tokenizer.decode(trained)


def test_generation_masks_caption_and_instruction_and_trains_codes(built):
    config, tokenizer = built
    ids, labels = generation_sample(tokenizer, config, [1, 2, 3], "a red star")
    prefix = generation_prefix(tokenizer, config, "a red star")
    assert prefix[-1] == config.vision_start_token_id and ids[: len(prefix)] == prefix
    assert labels[: len(prefix)] == [IGNORE_INDEX] * len(prefix)
    assert labels[len(prefix) :] == [
        config.text_vocab_size + 1,
        config.text_vocab_size + 2,
        config.text_vocab_size + 3,
        config.vision_end_token_id,
    ]
    uncond, _ = generation_sample(tokenizer, config, [1, 2, 3], None)
    assert uncond[:2] == [config.unconditional_token_id, config.vision_start_token_id]


def test_text_only_trains_every_token_and_the_end(built):
    _, tokenizer = built
    ids, labels = text_sample(tokenizer, "a red star")
    assert ids == labels and ids[-1] == tokenizer.eos_token_id


def test_a_code_outside_the_codebook_is_a_clear_error(built):
    config, tokenizer = built
    with pytest.raises(ConfigError, match="outside the model's codebook of 8"):
        understanding_sample(tokenizer, config, [0, 8], "q", "a")
