"""Building a unified model from a Qwen2-family LM: special tokens, the grown vocabulary, mean-initialised rows,
vision copies of the text layers, and the checks on the spec."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vlmforge.errors import ConfigError
from vlmforge.models.unified import SPECIAL_TOKENS, UnifiedSpec, unified_from_pretrained_lm
from vlmforge.models.unified.code_embeddings import code_vectors, codebook_rows
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


def test_codebook_rows_keep_the_codebook_geometry_around_the_text_rows():
    text_rows = torch.randn(50, 16) * 0.3 + 1.0
    vectors = torch.randn(12, 6)
    rows = codebook_rows(text_rows, vectors)
    # An isometry times one scale: every pairwise distance keeps its ratio to the others.
    ratio = (
        torch.cdist(rows, rows)[~torch.eye(12, dtype=torch.bool)]
        / torch.cdist(vectors, vectors)[~torch.eye(12, dtype=torch.bool)]
    )
    torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rows.mean(0), text_rows.mean(0), rtol=1e-4, atol=1e-5)
    spread = (text_rows - text_rows.mean(0)).norm(dim=1).mean()
    torch.testing.assert_close((rows - rows.mean(0)).norm(dim=1).mean(), spread)


def test_codebook_rows_of_wider_vectors_keep_their_main_directions():
    # 40-dim vectors that vary in 3 directions only fit a 16-dim LM without losing any distance.
    basis = torch.linalg.qr(torch.randn(40, 3))[0].T
    vectors = torch.randn(20, 3) @ basis + 5.0
    rows = codebook_rows(torch.randn(30, 16), vectors)
    off = ~torch.eye(20, dtype=torch.bool)
    ratio = torch.cdist(rows, rows)[off] / torch.cdist(vectors, vectors)[off]
    torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio), rtol=1e-3, atol=1e-4)


def test_codebook_init_places_each_code_and_keeps_the_text_rows(lm_dir):
    vectors = torch.randn(24, 10)
    spec = UnifiedSpec(codebook_size=24, image_grid=(2, 3), code_init="codebook")
    model, _ = unified_from_pretrained_lm(str(lm_dir), spec, code_vectors=vectors)
    lm_rows = AutoModelForCausalLM.from_pretrained(lm_dir).get_input_embeddings().weight
    rows = model.get_input_embeddings().weight
    torch.testing.assert_close(rows[: len(lm_rows)], lm_rows)
    codes = rows[model.config.text_vocab_size :]
    torch.testing.assert_close(codes, codebook_rows(lm_rows, vectors))
    torch.testing.assert_close(model.lm_head.weight[model.config.text_vocab_size :], codes)  # the head is tied
    mean_model, _ = unified_from_pretrained_lm(str(lm_dir), UnifiedSpec(codebook_size=24, image_grid=(2, 3)))
    mean_codes = mean_model.get_input_embeddings().weight[mean_model.config.text_vocab_size :]
    assert (mean_codes - mean_codes.mean(0)).norm(dim=1).max() < 0.1 * (codes - codes.mean(0)).norm(dim=1).min()


def test_codebook_init_needs_code_vectors(lm_dir):
    spec = UnifiedSpec(codebook_size=24, image_grid=(2, 3), code_init="codebook")
    with pytest.raises(ConfigError, match="needs the image tokenizer's code vectors"):
        unified_from_pretrained_lm(str(lm_dir), spec)
    with pytest.raises(ConfigError, match="unknown code_init 'pca'"):
        unified_from_pretrained_lm(str(lm_dir), UnifiedSpec(code_init="pca"))

    class NoVectors:
        codebook_size, grid = 24, (2, 3)

    with pytest.raises(ConfigError, match="NoVectors has no code_vectors"):
        code_vectors(NoVectors())
