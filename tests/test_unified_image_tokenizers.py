"""The Chameleon VQGAN wrapper with a tiny random config: codes, images, the taming key layout, save/load."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import ChameleonVQVAEConfig

from vlmforge.errors import ConfigError
from vlmforge.models.chameleon_tokenizer import ChameleonImageTokenizer, chameleon_vqgan_config
from vlmforge.models.image_tokenizer import ImageTokenizer


def tiny_config() -> ChameleonVQVAEConfig:
    return ChameleonVQVAEConfig(
        embed_dim=8, num_embeddings=40, latent_channels=32, resolution=32, base_channels=32,
        channel_multiplier=[1, 2, 1], num_res_blocks=1, attn_resolutions=[8],
    )  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return ChameleonImageTokenizer(tiny_config())


def images(n=3, size=(40, 36)):
    colours = [(220, 30, 30), (30, 160, 50), (30, 70, 220), (235, 200, 0)]
    return [Image.new("RGB", size, colours[i % 4]) for i in range(n)]


def test_encode_and_decode(tokenizer):
    assert isinstance(tokenizer, ImageTokenizer)
    assert tokenizer.grid == (8, 8) and tokenizer.codebook_size == 40
    codes = tokenizer.encode(images())
    assert codes.shape == (3, 64) and codes.dtype == torch.long and 0 <= int(codes.min()) <= int(codes.max()) < 40
    direct = tokenizer.vq.encode(tokenizer.processor(images(), return_tensors="pt")["pixel_values"]).image_tokens
    assert torch.equal(codes, direct.view(3, -1))
    decoded = tokenizer.decode(codes)
    assert len(decoded) == 3 and decoded[0].size == (32, 32) and decoded[0].mode == "RGB"
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 40\)"):
        tokenizer.decode(torch.full((1, 64), 40))


def test_taming_layout_loads_and_saves(tokenizer, tmp_path):
    """A taming-transformers state dict (prefixes encoder./decoder./quantize./quant_conv./post_quant_conv.)
    loads key for key; loss weights are ignored; a save/load round trip keeps every code and pixel."""
    taming = {k.removeprefix("vq."): v.clone() for k, v in tokenizer.state_dict().items()}
    assert "decoder.up.0.block.0.norm1.weight" in taming and "decoder.up.1.attn.0.q.weight" not in taming
    assert "decoder.up.2.attn.0.q.weight" in taming and "decoder.up.1.upsample.conv.weight" in taming
    taming["loss.discriminator.weight"] = torch.zeros(1)
    other = ChameleonImageTokenizer(tiny_config())
    other.load_taming_state_dict(taming)
    codes = tokenizer.encode(images())
    assert torch.equal(other.encode(images()), codes)
    loaded = ChameleonImageTokenizer.load(other.save(tmp_path / "vq"))
    assert torch.equal(loaded.encode(images()), codes)
    assert list(loaded.decode(codes)[0].getdata()) == list(tokenizer.decode(codes)[0].getdata())
    with pytest.raises(ConfigError, match="not a VQGAN of this config"):
        other.load_taming_state_dict({"encoder.conv_in.weight": torch.zeros(1)})


def test_the_released_shape():
    config = chameleon_vqgan_config()
    assert config.num_embeddings == 8192 and config.resolution // 2 ** (len(config.channel_multiplier) - 1) == 32
