"""`vlmforge generate-image` end to end on tiny parts, and opening a saved image tokenizer of any kind."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import Qwen2Config, Qwen2ForCausalLM

from vlmforge.cli import main
from vlmforge.errors import ConfigError
from vlmforge.models.image_tokenizer import LOADER_FILE, load_image_tokenizer
from vlmforge.models.unified import UnifiedSpec, build_unified
from vlmforge.shapes.foundation.patch_tokenizer import PatchTokenizer
from vlmforge.testing.tiny import tiny_tokenizer

PALETTE = [(240, 240, 240), (220, 30, 30), (30, 70, 220)]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate_image")
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    )  # fmt: skip
    spec = UnifiedSpec(encode_layers=1, decode_layers=1, codebook_size=10, image_grid=(2, 2))
    model, tokenizer = build_unified(lm, tokenizer, spec)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    PatchTokenizer(torch.rand(10, 4 * 4 * len(PALETTE)), PALETTE, 4, 8).save(root / "tokenizer")
    return root


def test_generate_image_writes_pngs_and_codes(parts, tmp_path):
    out = tmp_path / "images"
    args = ["generate-image", "--model", str(parts / "model"), "--image-tokenizer", str(parts / "tokenizer")]
    code = main([*args, "--prompt", "a red circle", "--prompt", "a blue square", "--out", str(out), "--top-k", "5"])
    assert code == 0
    lines = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert [line["prompt"] for line in lines] == ["a red circle", "a blue square"]
    assert all(len(line["codes"]) == 4 and all(0 <= c < 10 for c in line["codes"]) for line in lines)
    assert Image.open(out / lines[0]["file"]).size == (8, 8)
    assert main([*args, "--prompt", "a red circle", "--out", str(out), "--cfg", "-1"]) == 1


def test_image_tokenizer_folders_name_their_loader(parts, tmp_path):
    assert isinstance(load_image_tokenizer(parts / "tokenizer"), PatchTokenizer)
    with pytest.raises(ConfigError, match="not a saved image tokenizer"):
        load_image_tokenizer(tmp_path)
    (tmp_path / LOADER_FILE).write_text(json.dumps({"loader": "os:system"}))
    with pytest.raises(ConfigError, match="outside vlmforge; refusing to import it"):
        load_image_tokenizer(tmp_path)
