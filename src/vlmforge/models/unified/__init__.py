"""The unified model of Uni-X: one causal LM that reads and writes images as VQ codes in its vocabulary.

Importing this package registers the model type with ``AutoConfig`` and ``AutoModelForCausalLM``;
``vlmforge.models.register_models()`` does so for every vlmforge architecture.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from vlmforge.models.unified.assemble import UnifiedSpec, build_unified, unified_from_pretrained_lm
from vlmforge.models.unified.cache import UnifiedCache
from vlmforge.models.unified.configuration import (
    ARMS,
    MODEL_TYPE,
    SPECIAL_TOKENS,
    UNCONDITIONAL,
    VISION_END,
    VISION_START,
    UnifiedConfig,
)
from vlmforge.models.unified.modeling import UnifiedForCausalLM

AutoConfig.register(MODEL_TYPE, UnifiedConfig, exist_ok=True)
AutoModelForCausalLM.register(UnifiedConfig, UnifiedForCausalLM, exist_ok=True)

__all__ = [
    "ARMS",
    "MODEL_TYPE",
    "SPECIAL_TOKENS",
    "UNCONDITIONAL",
    "VISION_END",
    "VISION_START",
    "UnifiedCache",
    "UnifiedConfig",
    "UnifiedForCausalLM",
    "UnifiedSpec",
    "build_unified",
    "unified_from_pretrained_lm",
]
