"""Processor of the embedding-input VLM: tokenizer + the paired encoder's image processor.

Each ``<image>`` in the text becomes ``num_visual_tokens`` image tokens. Images come either as real pictures
(``images`` -> ``pixel_values``, the inference path) or as precomputed embeddings (``image_embeds``, the training
path), so ``vlmforge.runtime`` and the data pipeline use it like a LLaVA processor.
"""

from __future__ import annotations

import torch
from transformers import BatchFeature, ProcessorMixin

from vlmforge.models.assemble import IMAGE_TOKEN


class EmbeddingVLMProcessor(ProcessorMixin):
    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_visual_tokens: int = 16,
        chat_template=None,
        image_token: str = IMAGE_TOKEN,
        **kwargs,
    ):
        self.num_visual_tokens = num_visual_tokens
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    @property
    def image_seq_length(self) -> int:
        """Tokens per image (what ``vlmforge.data.chat.image_seq_length`` asks a processor for)."""
        return self.num_visual_tokens

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.num_visual_tokens

    def __call__(self, images=None, text=None, image_embeds=None, **kwargs) -> BatchFeature:
        """``images`` (PIL / arrays) or ``image_embeds`` ([N, embed_dim], one row per ``<image>`` in order)."""
        if image_embeds is None:
            return super().__call__(images=images, text=text, **kwargs)
        if images is not None:
            raise ValueError("pass images or image_embeds, not both")
        texts = [text] if isinstance(text, str) else list(text)
        embeds = torch.as_tensor(image_embeds).float().reshape(-1, torch.as_tensor(image_embeds).shape[-1])
        if sum(t.count(self.image_token) for t in texts) != len(embeds):
            raise ValueError(f"{len(embeds)} image embedding(s) for the {self.image_token} tokens in the text")
        expanded = [t.replace(self.image_token, self.image_token * self.num_visual_tokens) for t in texts]
        return_tensors = kwargs.pop("return_tensors", None)
        data = dict(self.tokenizer(expanded, return_tensors=return_tensors, **kwargs))
        data["image_embeds"] = embeds
        return BatchFeature(data, tensor_type=return_tensors)
