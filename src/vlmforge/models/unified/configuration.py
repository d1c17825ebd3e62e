"""Config of the unified model (Uni-X): one causal LM whose vocabulary also holds an image codebook.

Token ids ``[0, text_vocab_size)`` are text (the tokenizer's, with ``<|vision_start|>``, ``<|vision_end|>`` and
``<unconditional>`` among them); ids ``[text_vocab_size, text_vocab_size + codebook_size)`` are image codes. A token
is *vision* if its id is an image code or ``<|vision_start|>`` (Uni-X's rule), so the token that opens an image is
already read by the vision layers and the one that predicts the first code is a vision token.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

MODEL_TYPE = "vlmforge_unified"
# shared:  the dense baseline, every layer shared by both modalities.
# two_end: Uni-X, the first E and last D layers exist once per modality, attention within a modality there.
# mot:     Mixture-of-Transformers, every layer's norms, attention projections and MLP exist once per modality,
#          attention stays global.
ARMS = ("shared", "two_end", "mot")
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
UNCONDITIONAL = "<unconditional>"
SPECIAL_TOKENS = (VISION_START, VISION_END, UNCONDITIONAL)


class UnifiedConfig(PreTrainedConfig):
    """``text_config``: the Qwen2-family LM the model is built from, its ``vocab_size`` already grown by the codebook.

    ``arm``: see ``ARMS``. ``num_vision_encode_layers`` (E) and ``num_vision_decode_layers`` (D): how many of the
    first and last layers have a vision copy (both 0 for ``shared``). ``text_vocab_size``: the first image-code id.
    ``codebook_size``: how many codes the image tokenizer has. ``image_grid``: (rows, columns) of codes per image, so
    one image is ``rows * columns`` codes. ``init_vision_with_text``: a new model's vision copies start as copies of
    their text layers (Uni-X's option; the paper's code leaves them random otherwise).
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2")}

    text_config: dict | PreTrainedConfig | None = None
    arm: str = "two_end"
    num_vision_encode_layers: int = 0
    num_vision_decode_layers: int = 0
    text_vocab_size: int = 0
    codebook_size: int = 0
    image_grid: tuple[int, int] | list[int] = (8, 8)
    vision_start_token_id: int = 0
    vision_end_token_id: int = 0
    unconditional_token_id: int = 0
    init_vision_with_text: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.image_grid = tuple(int(n) for n in self.image_grid)
        self.validate_layout()

    def validate_layout(self) -> None:
        if self.arm not in ARMS:
            raise ValueError(f"arm must be one of {ARMS}, got {self.arm!r}")
        e, d = self.num_vision_encode_layers, self.num_vision_decode_layers
        if e < 0 or d < 0:
            raise ValueError(f"num_vision_encode_layers and num_vision_decode_layers must be >= 0, got {e} and {d}")
        if self.arm != "two_end" and (e or d):
            raise ValueError(f"E and D belong to the two_end arm; the {self.arm} arm got E={e}, D={d}")
        layers = self.text_config.num_hidden_layers
        if e + d > layers:
            raise ValueError(f"E + D = {e + d} split layers, but the LM has only {layers} layers")
        if len(self.image_grid) != 2 or min(self.image_grid) < 1:
            raise ValueError(f"image_grid must be (rows, columns) >= 1, got {self.image_grid}")
        vocab = self.text_config.vocab_size
        # A bare default config (which transformers builds to diff against when saving) has no codebook yet.
        if self.text_vocab_size and self.text_vocab_size + self.codebook_size != vocab:
            raise ValueError(
                f"text_vocab_size {self.text_vocab_size} + codebook_size {self.codebook_size} must equal the LM's "
                f"vocab_size {vocab}"
            )
        for name in ("vision_start_token_id", "vision_end_token_id", "unconditional_token_id"):
            value = getattr(self, name)
            if self.codebook_size and not 0 <= value < self.text_vocab_size:
                raise ValueError(
                    f"{name} {value} must be a text token id, below text_vocab_size {self.text_vocab_size}"
                )

    @property
    def image_seq_length(self) -> int:
        """Codes per image."""
        return self.image_grid[0] * self.image_grid[1]

    @property
    def split_layers(self) -> list[int]:
        """Indices of the layers whose two copies attend within their modality (two_end: the first E, the last D)."""
        layers = self.text_config.num_hidden_layers
        return list(range(self.num_vision_encode_layers)) + list(range(layers - self.num_vision_decode_layers, layers))

    @property
    def copied_layers(self) -> list[int]:
        """Indices of the layers that have a vision copy: the split layers, or every layer for mot."""
        return list(range(self.text_config.num_hidden_layers)) if self.arm == "mot" else self.split_layers
