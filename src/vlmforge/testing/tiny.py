"""Build tiny, randomly initialised foundation parts and a tiny LLaVA for tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from vlmforge.models.assemble import AssemblySpec, assemble_llava
from vlmforge.models.tokenizer import train_tokenizer

TINY_TEXT = [
    "a red circle at the top left",
    "two blue squares and a green triangle",
    "What colour is the circle? red",
    "How many objects are there? 3",
    "Is there a yellow star in the image? No",
    "Answer the question using a single word or phrase.",
] * 20


def tiny_tokenizer(vocab_size: int = 400, extra_text: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    return train_tokenizer([*TINY_TEXT, *extra_text], vocab_size=vocab_size)


def save_tiny_lm(
    out: Path,
    hidden: int = 32,
    layers: int = 2,
    extra_text: Sequence[str] = (),
    intermediate: int | None = None,
    max_positions: int = 1024,
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> Path:
    """A random Qwen2 LM at ``out`` with ``tokenizer``, by default the tiny one (``intermediate``: twice ``hidden``
    by default)."""
    tokenizer = tokenizer or tiny_tokenizer(extra_text=extra_text)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_tiny_vision(out: Path, image_size: int = 32, patch_size: int = 8, hidden: int = 32) -> Path:
    config = SiglipVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    SiglipVisionModel(config).save_pretrained(out)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


def save_tiny_llava(out: Path, projector: str = "mlp2x_gelu", extra_text: Sequence[str] = ()) -> Path:
    """Tiny parts -> assembled LLaVA saved at ``out`` (with processor and chat template); ``extra_text`` joins
    the tokenizer's training text (to make words single tokens)."""
    out = Path(out)
    vision = save_tiny_vision(out.parent / f"{out.name}-vision")
    lm = save_tiny_lm(out.parent / f"{out.name}-lm", extra_text=extra_text)
    model, processor = assemble_llava(AssemblySpec(str(vision), str(lm), projector=projector))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def save_lab_size_parts(out: Path, tokenizer: PreTrainedTokenizerFast | None = None) -> tuple[Path, Path]:
    """The random vision tower and LM of the shapes lab's size at ``OUT-vision`` and ``OUT-lm``: a CLIP tower on
    64-pixel images with 21-pixel patches (9 image tokens) and a 4-layer, 128-wide Qwen2, as
    ``vlmforge.shapes.foundation`` builds them; the LM with ``tokenizer`` (by default the tiny one)."""
    out = Path(out)
    vision = out.parent / f"{out.name}-vision"
    vision_config = CLIPVisionConfig(
        image_size=64, patch_size=21, hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=3
    )
    CLIPVisionModel(vision_config).save_pretrained(vision)
    side = {"height": 64, "width": 64}
    CLIPImageProcessor(size=side, crop_size=side, do_center_crop=False).save_pretrained(vision)
    lm = save_tiny_lm(
        out.parent / f"{out.name}-lm", hidden=128, layers=4, intermediate=384, max_positions=512, tokenizer=tokenizer
    )
    return vision, lm


def save_lab_size_llava(out: Path) -> Path:
    """A random LLaVA of the shapes lab's size (``save_lab_size_parts``), for benchmarks."""
    out = Path(out)
    vision, lm = save_lab_size_parts(out)
    model, processor = assemble_llava(AssemblySpec(str(vision), str(lm)))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
