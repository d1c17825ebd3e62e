"""The embedding-input VLM of Unicorn: one pooled embedding per image, projected to k soft tokens, fills the k
``<image>`` tokens of the prompt of any causal LM.

Training feeds ``image_embeds`` (caption embeddings already moved into the image-embedding space, see
``vlmforge.models.embedding_vlm.transfer``); inference feeds ``pixel_values``, which the frozen paired image encoder turns
into v = Norm(Norm(e_img) - image_mean), the paper's test-time centring with a mean calibrated on a set of images
(:mod:`vlmforge.models.embedding_vlm.calibrate`). An uncalibrated model has a zero mean: no centring. Calibrated
with covariance alignment (an extension, :mod:`vlmforge.models.embedding_vlm.alignment`), the centred vector is also
multiplied by the buffer ``image_align`` before it is normalised.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    CLIPVisionModelWithProjection,
    GenerationMixin,
    PreTrainedModel,
)

from vlmforge.models.embedding_vlm.alignment import align
from vlmforge.models.embedding_vlm.configuration import EmbeddingVLMConfig

# Encoders whose plain AutoModel lacks the pooled projection into the shared text-image space.
_WITH_PROJECTION = {"clip_vision_model": CLIPVisionModelWithProjection}


def build_image_encoder(config) -> nn.Module:
    """The paired image encoder from its config (CLIP: the tower *with* its projection, so ``image_embeds`` exists)."""
    cls = _WITH_PROJECTION.get(config.model_type)
    return cls(config) if cls is not None else AutoModel.from_config(config)


def pooled_embedding(output) -> torch.Tensor:
    """The pooled image embedding in the joint space: ``image_embeds`` (CLIP with projection) or ``pooler_output``
    (SigLIP's attention-pooling head)."""
    embeds = getattr(output, "image_embeds", None)
    return embeds if embeds is not None else output.pooler_output


@torch.no_grad()
def encode_images(encoder: nn.Module, image_processor, images, batch_size: int = 64) -> torch.Tensor:
    """Pooled embeddings of ``images`` (PIL) through an image encoder, in batches: [N, D] float32 on the CPU, not
    normalised. Inputs go to the encoder's device and dtype."""
    parameter = next(encoder.parameters())
    rows = []
    for start in range(0, len(images), batch_size):
        pixels = image_processor(list(images[start : start + batch_size]), return_tensors="pt")["pixel_values"]
        output = encoder(pixel_values=pixels.to(parameter.device, parameter.dtype))
        rows.append(pooled_embedding(output).float().cpu())
    return torch.cat(rows)


class EmbeddingProjector(nn.Module):
    """[N, embed_dim] -> [N, k, hidden]; see ``configuration.PROJECTORS``."""

    def __init__(self, config: EmbeddingVLMConfig):
        super().__init__()
        hidden, self.k = config.text_config.hidden_size, config.num_visual_tokens
        self.repeat = config.projector == "repeat"
        self.linear_1 = nn.Linear(config.embed_dim, hidden)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden, hidden if self.repeat else self.k * hidden)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        out = self.linear_2(self.act(self.linear_1(embeds)))
        if self.repeat:
            return out[:, None, :].expand(-1, self.k, -1)
        return out.view(embeds.shape[0], self.k, -1)


class EmbeddingVLMForConditionalGeneration(PreTrainedModel, GenerationMixin):
    config_class = EmbeddingVLMConfig
    config: EmbeddingVLMConfig
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False

    def __init__(self, config: EmbeddingVLMConfig):
        super().__init__(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.multi_modal_projector = EmbeddingProjector(config)
        self.vision_tower = (
            build_image_encoder(config.image_encoder_config) if config.image_encoder_config is not None else None
        )
        # Image-side centring vector (saved with the weights); zeros = not calibrated = no centring.
        self.register_buffer("image_mean", torch.zeros(config.embed_dim), persistent=True)
        if config.image_alignment == "covariance":  # only then: older and mean-calibrated checkpoints lack it
            self.register_buffer("image_align", torch.eye(config.embed_dim), persistent=True)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:  # a fresh model is uncalibrated; a loaded one gets its saved mean afterwards
            self.image_mean.zero_()
            if hasattr(self, "image_align"):
                self.image_align.copy_(torch.eye(self.config.embed_dim))

    # Embedding accessors go to the LM, so resizing and weight tying work as for a plain causal LM.
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    @property
    def lm_head(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Real images -> the model's input embeddings [N, embed_dim]: normalise, centre, normalise."""
        if self.vision_tower is None:
            raise ValueError("this model has no image encoder; pass image_embeds instead of pixel_values")
        encoder_dtype = next(self.vision_tower.parameters()).dtype
        with torch.no_grad():  # the paired encoder is frozen: it defines the space the projector learns from
            output = self.vision_tower(pixel_values=pixel_values.to(encoder_dtype))
        return self.centre(pooled_embedding(output))

    def centre(self, embeds: torch.Tensor) -> torch.Tensor:
        """v = Norm(Norm(e) - image_mean): the inference-side mean shift (identity up to scale when uncalibrated);
        with covariance alignment, Norm((Norm(e) - image_mean) image_align)."""
        return align(embeds, self.image_mean, getattr(self, "image_align", None))

    def image_tokens(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """[N, embed_dim] -> [N, k, hidden] soft tokens."""
        weight = self.multi_modal_projector.linear_1.weight
        return self.multi_modal_projector(image_embeds.reshape(-1, self.config.embed_dim).to(weight.dtype))

    def _fill_image_tokens(self, input_ids, inputs_embeds, image_embeds):
        tokens = self.image_tokens(image_embeds).to(inputs_embeds.dtype)
        mask = input_ids == self.config.image_token_index
        if int(mask.sum()) != tokens.shape[0] * tokens.shape[1]:
            raise ValueError(
                f"{int(mask.sum())} image tokens in the input but {tokens.shape[0]} image(s) x "
                f"{tokens.shape[1]} tokens each"
            )
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1).to(inputs_embeds.device), tokens)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        image_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ):
        """``image_embeds`` [N, embed_dim] (training: already transferred) or ``pixel_values`` (inference), one per
        image in the order their ``<image>`` tokens appear. Returns the LM's ``CausalLMOutputWithPast``."""
        if image_embeds is not None and pixel_values is not None:
            raise ValueError("pass image_embeds or pixel_values, not both")
        if kwargs.get("use_cache") is None and getattr(self.config, "use_cache", None) is not None:
            kwargs["use_cache"] = self.config.use_cache  # training sets it here; the LM reads only its own config
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            image_embeds = self.encode_images(pixel_values)
        if image_embeds is not None:
            if input_ids is None:
                raise ValueError("image inputs need input_ids to locate the image tokens")
            inputs_embeds = self._fill_image_tokens(input_ids, inputs_embeds, image_embeds)
        if past_key_values is not None:
            # Forwarded only when set: transformers 5.2x renamed it `cache` and warns whenever the old name is passed.
            kwargs["past_key_values"] = past_key_values
        return self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def prepare_inputs_for_generation(
        self, *args, image_embeds=None, pixel_values=None, is_first_iteration=False, **kwargs
    ):
        """Image inputs go in on the prefill step only; later steps read them from the KV cache."""
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            inputs.update(image_embeds=image_embeds, pixel_values=pixel_values)
        return inputs
