"""Tiny unified models built in code for the Uni-X tests: 4 layers, hidden 32, a 50-id text vocabulary and a
16-code codebook."""

from __future__ import annotations

import torch
from transformers import Qwen2Config

from vlmforge.models.unified import UnifiedConfig, UnifiedForCausalLM

TEXT_VOCAB, CODEBOOK = 50, 16
VISION_START, VISION_END, UNCONDITIONAL, PAD = 3, 4, 5, 0


def tiny_text_config(layers: int = 4, attn: str = "sdpa") -> Qwen2Config:
    config = Qwen2Config(
        vocab_size=TEXT_VOCAB + CODEBOOK,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=PAD,
        eos_token_id=1,
    )
    config._attn_implementation = attn
    return config


def tiny_unified(arm: str = "two_end", e: int = 1, d: int = 1, attn: str = "sdpa", seed: int = 0, **kw):
    """A random tiny unified model in eval mode; its vision copies are random too, so a wrong route shows."""
    torch.manual_seed(seed)
    config = UnifiedConfig(
        text_config=tiny_text_config(attn=attn).to_dict(),
        arm=arm,
        num_vision_encode_layers=e if arm == "two_end" else 0,
        num_vision_decode_layers=d if arm == "two_end" else 0,  # mot copies every layer's modules instead
        text_vocab_size=TEXT_VOCAB,
        codebook_size=CODEBOOK,
        image_grid=(2, 2),
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        unconditional_token_id=UNCONDITIONAL,
        init_vision_with_text=kw.pop("init_vision_with_text", False),
        pad_token_id=PAD,
        eos_token_id=1,
        **kw,
    )
    config._attn_implementation = attn
    return UnifiedForCausalLM(config).eval()


def code(i: int) -> int:
    return TEXT_VOCAB + i


def mixed_row(seed: int = 0, text: int = 5, codes: int = 4) -> list[int]:
    """caption, <|vision_start|>, codes, <|vision_end|>, more text: both modalities, in Uni-X's layout."""
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(6, TEXT_VOCAB, (2 * text,), generator=g).tolist()
    image = [code(i) for i in torch.randint(0, CODEBOOK, (codes,), generator=g).tolist()]
    return words[:text] + [VISION_START, *image, VISION_END] + words[text:]


def tiny_patch_tokenizer(codebook: int = 8, seed: int = 0):
    """A 3-colour patch tokenizer for 8 px images: 4 px patches, so a (2, 2) grid of ``codebook`` random codes."""
    from vlmforge.shapes.foundation.patch_tokenizer import PatchTokenizer

    centroids = torch.rand(codebook, 4 * 4 * 3, generator=torch.Generator().manual_seed(seed))
    return PatchTokenizer(centroids, [(0, 0, 0), (255, 0, 0), (0, 0, 255)], patch=4, image_size=8)


def save_unified_folder(out, arm: str = "two_end", max_positions: int = 1024, seed: int = 0):
    """A saved tiny unified model folder as training leaves it: weights, text tokenizer and ``image_tokenizer/``.
    Its weights are shaken so greedy answers are varied, image-dependent plain words rather than one repeated
    token, which would make any two answers equal."""
    from pathlib import Path

    from serve_support import PLAIN
    from vlmforge.models.unified import UnifiedSpec, unified_from_pretrained_lm
    from vlmforge.models.unified.chat_processor import IMAGE_TOKENIZER_DIR
    from vlmforge.testing.tiny import save_tiny_lm

    out = Path(out)
    lm = save_tiny_lm(out.parent / f"{out.name}-lm", hidden=32, layers=3, max_positions=max_positions)
    images = tiny_patch_tokenizer()
    e, d = (1, 1) if arm == "two_end" else (0, 0)
    spec = UnifiedSpec(arm, e, d, images.codebook_size, images.grid, init_vision_with_text=False)
    torch.manual_seed(seed)
    model, tokenizer = unified_from_pretrained_lm(str(lm), spec)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    words = [
        i
        for i in range(len(tokenizer))
        if i != tokenizer.eos_token_id and (i in tokenizer.all_special_ids or not set(tokenizer.decode([i])) <= PLAIN)
    ]
    model.generation_config.suppress_tokens = words
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    images.save(out / IMAGE_TOKENIZER_DIR)
    return out


def scene(seed: int):
    """An 8 px image of the tiny tokenizer's colours."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([(0, 0, 0), (255, 0, 0), (0, 0, 255)], dtype=torch.uint8)
    pixels = palette[torch.randint(0, 3, (8, 8), generator=g)]
    return Image.fromarray(pixels.numpy(), "RGB")
