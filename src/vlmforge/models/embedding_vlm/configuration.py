"""Config of the embedding-input VLM (Unicorn): one pooled embedding per image -> k soft tokens -> any causal LM."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODEL_TYPE = "vlmforge_embedding_vlm"
# mlp2x_gelu: Linear(D -> H), GELU, Linear(H -> k*H): k distinct tokens from one vector.
# repeat:     Linear(D -> H), GELU, Linear(H -> H), repeated k times (Unicorn's released code).
PROJECTORS = ("mlp2x_gelu", "repeat")
# How image embeddings meet the training vectors at inference: "mean" centres them (the paper); "covariance" also
# matches their covariance to the training store's (vlmforge.models.embedding_vlm.alignment; an extension).
IMAGE_ALIGNMENTS = ("mean", "covariance")


class EmbeddingVLMConfig(PreTrainedConfig):
    """``text_config``: any causal LM. ``image_encoder_config``: the paired image encoder whose pooled output lives in
    the same space as the caption embeddings (optional; without it the model only takes ``image_embeds``).

    ``embed_dim``: size of the pooled embedding. ``num_visual_tokens``: how many ``<image>`` tokens one image fills.
    ``transfer_method``: how the training embeddings were moved (none / mean_shift / c3), for the record.
    ``image_mean_count``: number of images the stored image mean was calibrated on (0: not calibrated, no centring).
    ``image_alignment``: "mean" (the paper's centring) or "covariance" (centring, then the buffer ``image_align``
    matches the covariance to the training vectors'; ``image_alignment_shrinkage`` records how it was computed).
    """

    model_type = MODEL_TYPE
    attribute_map = {"image_token_id": "image_token_index"}
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
        "image_encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model", optional=True),
    }

    text_config: dict | PreTrainedConfig | None = None
    image_encoder_config: dict | PreTrainedConfig | None = None
    embed_dim: int = 384
    num_visual_tokens: int = 16
    projector: str = "mlp2x_gelu"
    image_token_index: int = 0
    transfer_method: str | None = None
    image_mean_count: int = 0
    image_alignment: str = "mean"
    image_alignment_shrinkage: float | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.projector not in PROJECTORS:
            raise ValueError(f"projector must be one of {PROJECTORS}, got {self.projector!r}")
        if self.num_visual_tokens < 1:
            raise ValueError(f"num_visual_tokens must be at least 1, got {self.num_visual_tokens}")
        if self.image_alignment not in IMAGE_ALIGNMENTS:
            raise ValueError(f"image_alignment must be one of {IMAGE_ALIGNMENTS}, got {self.image_alignment!r}")
