"""The embedding-input VLM of Unicorn (trained on caption embeddings, run on real images).

Importing this package registers the model type with ``AutoConfig``, ``AutoModelForImageTextToText`` and
``AutoProcessor``; ``vlmforge.models.register_models()`` does so for every vlmforge architecture.
"""

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from vlmforge.models.embedding_vlm.assemble import assemble_embedding_vlm
from vlmforge.models.embedding_vlm.configuration import MODEL_TYPE, PROJECTORS, EmbeddingVLMConfig
from vlmforge.models.embedding_vlm.modeling import EmbeddingVLMForConditionalGeneration
from vlmforge.models.embedding_vlm.processing import EmbeddingVLMProcessor

AutoConfig.register(MODEL_TYPE, EmbeddingVLMConfig, exist_ok=True)
AutoModelForImageTextToText.register(EmbeddingVLMConfig, EmbeddingVLMForConditionalGeneration, exist_ok=True)
AutoProcessor.register(EmbeddingVLMConfig, EmbeddingVLMProcessor, exist_ok=True)

__all__ = [
    "MODEL_TYPE",
    "PROJECTORS",
    "EmbeddingVLMConfig",
    "EmbeddingVLMForConditionalGeneration",
    "EmbeddingVLMProcessor",
    "assemble_embedding_vlm",
]
