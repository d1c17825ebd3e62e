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
    # Its code vectors are the quantizer's codebook, the latents decode() paints from.
    assert torch.equal(tokenizer.code_vectors(), tokenizer.vq.quantize.embedding.weight)


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


class GreyTokenizer:
    """Codes are the image's grey level in 4 bands, one per pixel of a 2 x 2 thumbnail."""

    codebook_size, grid = 4, (2, 2)

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after

    def encode(self, images):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        return torch.stack([torch.tensor(list(im.convert("L").resize((2, 2)).getdata())) // 64 for im in images])

    def decode(self, codes):
        return [Image.new("RGB", (2, 2)) for _ in codes]


def test_dataset_encoding_is_batched_resumable_and_refuses_another_tokenizer(tmp_path):
    from vlmforge.errors import StaleOutputError
    from vlmforge.models.image_codes import encode_dataset, read_codes

    items = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (25 * i, 25 * i, 25 * i)).save(path)
        items.append((f"img{i}", path))
    whole = encode_dataset(GreyTokenizer(), items, tmp_path / "whole", batch_size=3, shard_size=3)
    ids, codes = read_codes(whole)
    assert ids == [i for i, _ in items] and codes.shape == (10, 4)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(GreyTokenizer(fail_after=2), items, tmp_path / "part", batch_size=3, shard_size=3)
    assert len(read_codes(tmp_path / "part")[0]) == 6
    resumed = GreyTokenizer()
    encode_dataset(resumed, items, tmp_path / "part", batch_size=3, shard_size=3)
    assert resumed.calls == 2  # only the 4 missing images, in batches of 3
    again_ids, again = read_codes(tmp_path / "part")
    assert again_ids == ids and torch.equal(again, codes)
    other = GreyTokenizer()
    other.codebook_size = 8
    with pytest.raises(StaleOutputError, match="another image tokenizer"):
        encode_dataset(other, items, tmp_path / "part")
