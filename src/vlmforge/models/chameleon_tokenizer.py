"""Chameleon's VQGAN (the 8192-code image tokenizer Uni-X uses) behind vlmforge's ``ImageTokenizer``.

transformers ships the encoder half as ``ChameleonVQVAE`` (encoder, quantizer, ``quant_conv``) but no decoder,
since its Chameleon only reads images. The decoder here is assembled from transformers' own VQGAN blocks
(Chameleon's residual and attention blocks, Janus's upsampling block) in the layout of the original taming-
transformers ``Decoder``, so the released ``vqgan.ckpt`` loads key for key: ``load_taming_state_dict`` takes its
state dict as is (``encoder.*``, ``decoder.*``, ``quantize.*``, ``quant_conv.*``, ``post_quant_conv.*``).
Preprocessing is transformers' ``ChameleonImageProcessorPil`` (resize, centre crop, scale to [-1, 1]).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import ChameleonVQVAE, ChameleonVQVAEConfig
from transformers.models.chameleon.image_processing_pil_chameleon import ChameleonImageProcessorPil
from transformers.models.chameleon.modeling_chameleon import (
    ChameleonVQVAEEncoderAttnBlock,
    ChameleonVQVAEEncoderResnetBlock,
)
from transformers.models.janus.modeling_janus import JanusVQVAEConvUpsample

from vlmforge.errors import ConfigError
from vlmforge.models.image_tokenizer import check_codes, write_loader

WEIGHTS, CONFIG = "vqgan.safetensors", "vqgan_config.json"


class VQGANDecoder(nn.Module):
    """taming-transformers' VQGAN decoder, built from transformers' blocks; ``up[level]`` as in taming (level 0
    is the full resolution), attention wherever the resolution is in ``attn_resolutions``."""

    def __init__(self, config: ChameleonVQVAEConfig):
        super().__init__()
        multipliers, levels = config.channel_multiplier, len(config.channel_multiplier)
        block_in = config.base_channels * multipliers[-1]
        resolution = config.resolution // 2 ** (levels - 1)
        attn_at = set(config.attn_resolutions or ())
        self.conv_in = nn.Conv2d(config.latent_channels, block_in, kernel_size=3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ChameleonVQVAEEncoderResnetBlock(config, block_in, block_in)
        self.mid.attn_1 = ChameleonVQVAEEncoderAttnBlock(block_in)
        self.mid.block_2 = ChameleonVQVAEEncoderResnetBlock(config, block_in, block_in)
        ups = []
        for level in reversed(range(levels)):
            up = nn.Module()
            up.block, up.attn = nn.ModuleList(), nn.ModuleList()
            block_out = config.base_channels * multipliers[level]
            for _ in range(config.num_res_blocks + 1):
                up.block.append(ChameleonVQVAEEncoderResnetBlock(config, block_in, block_out))
                block_in = block_out
                if resolution in attn_at:
                    up.attn.append(ChameleonVQVAEEncoderAttnBlock(block_in))
            if level != 0:
                up.upsample = JanusVQVAEConvUpsample(block_in)
                resolution *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = nn.GroupNorm(num_groups=32, num_channels=block_in, eps=1e-6, affine=True)
        self.conv_out = nn.Conv2d(block_in, config.in_channels, kernel_size=3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        hidden = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(latent))))
        for level in reversed(range(len(self.up))):
            up = self.up[level]
            for index, block in enumerate(up.block):
                hidden = block(hidden)
                if len(up.attn):
                    hidden = up.attn[index](hidden)
            if level != 0:
                hidden = up.upsample(hidden)
        hidden = self.norm_out(hidden)
        return self.conv_out(hidden * torch.sigmoid(hidden))


class ChameleonImageTokenizer(nn.Module):
    """Encoder and quantizer: transformers' ``ChameleonVQVAE``; decoder: :class:`VQGANDecoder`."""

    def __init__(self, config: ChameleonVQVAEConfig):
        super().__init__()
        self.config = config
        self.vq = ChameleonVQVAE(config)
        self.decoder = VQGANDecoder(config)
        side = config.resolution // 2 ** (len(config.channel_multiplier) - 1)
        self.grid = (side, side)
        self.codebook_size = config.num_embeddings
        crop = {"height": config.resolution, "width": config.resolution}
        self.processor = ChameleonImageProcessorPil(size={"shortest_edge": config.resolution}, crop_size=crop)
        self.eval()

    def code_vectors(self) -> torch.Tensor:
        """The quantizer's codebook ``[8192, embed_dim]``: what a unified model's ``code_init: codebook`` uses."""
        return self.vq.quantize.embedding.weight.detach()

    @torch.no_grad()
    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        parameter = next(self.parameters())
        pixels = self.processor(list(images), return_tensors="pt")["pixel_values"]
        output = self.vq.encode(pixels.to(parameter.device, parameter.dtype))
        return output.image_tokens.view(len(images), -1).cpu()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> list[Image.Image]:
        codes = check_codes(codes, self).to(next(self.parameters()).device)
        latent = self.vq.quantize.embedding(codes).view(len(codes), *self.grid, -1).permute(0, 3, 1, 2)
        pixels = self.decoder(self.vq.post_quant_conv(latent.contiguous()))
        pixels = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        return [Image.fromarray(image, "RGB") for image in pixels.numpy()]

    def load_taming_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a taming-transformers VQGAN state dict (the released Chameleon ``vqgan.ckpt``'s ``state_dict``);
        loss-module weights in it are ignored, anything missing is an error."""
        ours = {k if k.startswith("decoder.") else f"vq.{k}": v for k, v in state_dict.items()}
        ours = {k: v for k, v in ours.items() if not k.startswith("vq.loss.")}
        expected = set(self.state_dict())
        missing, unexpected = sorted(expected - set(ours)), sorted(set(ours) - expected)
        if missing or unexpected:
            raise ConfigError(f"not a VQGAN of this config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        try:
            self.load_state_dict(ours)
        except RuntimeError as err:  # same keys, other shapes: a VQGAN of another size
            raise ConfigError(f"not a VQGAN of this config: {err}") from err

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS))
        (folder / CONFIG).write_text(self.config.to_json_string())
        write_loader(folder, self)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ChameleonImageTokenizer:
        folder = Path(folder)
        if not (folder / CONFIG).exists() or not (folder / WEIGHTS).exists():
            raise ConfigError(f"'{folder}' is not a saved Chameleon image tokenizer (no {CONFIG} and {WEIGHTS})")
        tokenizer = cls(ChameleonVQVAEConfig(**json.loads((folder / CONFIG).read_text())))
        tokenizer.load_state_dict(load_file(str(folder / WEIGHTS)))
        return tokenizer


def chameleon_vqgan_config() -> ChameleonVQVAEConfig:
    """The released Chameleon VQGAN's shape: 512 px, 8192 codes of 256 dims, a 32 x 32 code grid."""
    return ChameleonVQVAEConfig(
        embed_dim=256, num_embeddings=8192, latent_channels=256, resolution=512, base_channels=128,
        channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[],
    )  # fmt: skip
