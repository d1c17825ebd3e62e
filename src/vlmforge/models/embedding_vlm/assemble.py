"""Assemble an embedding-input VLM from any causal LM and (optionally) the paired image encoder."""

from __future__ import annotations

import torch
from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer

from vlmforge.errors import ConfigError
from vlmforge.models.assemble import IMAGE_TOKEN, prepare_tokenizer, resolve_model_path, vision_config_of
from vlmforge.models.embedding_vlm.configuration import PROJECTORS, EmbeddingVLMConfig
from vlmforge.models.embedding_vlm.modeling import EmbeddingVLMForConditionalGeneration, build_image_encoder
from vlmforge.models.embedding_vlm.processing import EmbeddingVLMProcessor


def _encoder_dim(config) -> int:
    return int(getattr(config, "projection_dim", None) or config.hidden_size)


def load_image_encoder(path: str, config=None):
    """The paired encoder with its pretrained weights (CLIP: tower + visual projection)."""
    encoder = build_image_encoder(config if config is not None else vision_config_of(path))
    source = type(encoder).from_pretrained(path)
    missing, _ = encoder.load_state_dict(source.state_dict(), strict=False)
    if missing:
        raise ConfigError(f"image encoder weights from '{path}' do not fit: missing {missing[:5]}")
    return encoder


def assemble_embedding_vlm(
    language_model: str,
    image_encoder: str | None = None,
    embed_dim: int | None = None,
    num_visual_tokens: int = 16,
    projector: str = "mlp2x_gelu",
    dtype: str = "float32",
) -> tuple[EmbeddingVLMForConditionalGeneration, EmbeddingVLMProcessor]:
    """Build model + processor. ``embed_dim`` defaults to the encoder's output size (CLIP: ``projection_dim``);
    without an encoder it is required, and the model then takes ``image_embeds`` only."""
    if projector not in PROJECTORS:
        raise ConfigError(f"unknown projector '{projector}' for embedding_vlm; choose one of {', '.join(PROJECTORS)}")
    lm_path = resolve_model_path(language_model, "language model")
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(lm_path))
    encoder_config = encoder_path = None
    if image_encoder:
        encoder_path = resolve_model_path(image_encoder, "image encoder")
        encoder_config = vision_config_of(encoder_path)
        if embed_dim is not None and embed_dim != _encoder_dim(encoder_config):
            raise ConfigError(
                f"embed_dim {embed_dim} differs from the image encoder's output size {_encoder_dim(encoder_config)}"
            )
        embed_dim = _encoder_dim(encoder_config)
    if embed_dim is None:
        raise ConfigError("embed_dim is required when no image encoder is given")

    lm = AutoModelForCausalLM.from_pretrained(lm_path)
    if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    config = EmbeddingVLMConfig(
        text_config=lm.config.to_dict(),
        image_encoder_config=encoder_config.to_dict() if encoder_config is not None else None,
        embed_dim=embed_dim,
        num_visual_tokens=num_visual_tokens,
        projector=projector,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
    )
    model = EmbeddingVLMForConditionalGeneration(config)
    model.language_model.load_state_dict(lm.state_dict())
    if encoder_path is not None:
        model.vision_tower.load_state_dict(load_image_encoder(encoder_path, encoder_config).state_dict())
    model = model.to(getattr(torch, dtype))

    image_processor = AutoImageProcessor.from_pretrained(encoder_path) if encoder_path else None
    processor = EmbeddingVLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_visual_tokens=num_visual_tokens,
        chat_template=tokenizer.chat_template,
    )
    return model, processor
