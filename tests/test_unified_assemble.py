"""Building a unified model from a Qwen2-family LM: special tokens, the grown vocabulary, mean-initialised rows,
vision copies of the text layers, and the checks on the spec."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vlmforge.errors import ConfigError
from vlmforge.models.unified import SPECIAL_TOKENS, UnifiedSpec, unified_from_pretrained_lm
from vlmforge.testing.tiny import save_tiny_lm


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("unified_lm") / "lm", hidden=32, layers=4)


def test_built_model_keeps_the_lm_and_grows_by_the_codebook(lm_dir):
    spec = UnifiedSpec(arm="two_end", encode_layers=1, decode_layers=1, codebook_size=24, image_grid=(2, 3))
    model, tokenizer = unified_from_pretrained_lm(str(lm_dir), spec)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    old_rows = lm.get_input_embeddings().weight
    config = model.config
    assert all(t in tokenizer.get_vocab() for t in SPECIAL_TOKENS)
    assert config.text_vocab_size == len(tokenizer) == len(AutoTokenizer.from_pretrained(lm_dir)) + 3
    assert config.text_config.vocab_size == config.text_vocab_size + 24
    assert config.image_seq_length == 6
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") == config.vision_start_token_id
    # Old rows unchanged; the new rows (special tokens and codes) start near the old rows' mean.
    rows = model.get_input_embeddings().weight
    torch.testing.assert_close(rows[: len(old_rows)], old_rows)
    new_mean = rows[len(old_rows) :].mean(0)
    assert (new_mean - old_rows.mean(0)).abs().max() < 0.05 * old_rows.abs().max()
    # Vision copies start as their text layers; text logits equal the LM's.
    for copy, index in zip(model.vision_layers, config.split_layers, strict=True):
        for (name, a), b in zip(
            copy.state_dict().items(), model.model.layers[index].state_dict().values(), strict=True
        ):
            torch.testing.assert_close(a, b, msg=name)
    ids = tokenizer("a red circle at the top left", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids, use_cache=False).logits[..., : len(old_rows)], lm(ids).logits)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (UnifiedSpec(arm="moe"), "unknown unified arm 'moe'"),
        (UnifiedSpec(arm="shared", encode_layers=1), "the shared arm takes no encode_layers"),
        (UnifiedSpec(arm="mot", decode_layers=1), "the mot arm takes no encode_layers"),
        (UnifiedSpec(encode_layers=3, decode_layers=2), "must be >= 0 and fit the LM's 4 layers"),
        (UnifiedSpec(codebook_size=0), "codebook_size must be >= 1"),
    ],
)
def test_bad_specs_are_clear_errors(lm_dir, spec, message):
    with pytest.raises(ConfigError, match=message):
        unified_from_pretrained_lm(str(lm_dir), spec)
