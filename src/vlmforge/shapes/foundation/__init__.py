"""Tiny foundation models for the shapes world: a BPE tokenizer, a Qwen2 LM and a CLIP-style vision tower.

They play the roles that Qwen/Phi and SigLIP play at full scale; real users pass hub ids instead.
"""

from vlmforge.models.tokenizer import train_tokenizer
from vlmforge.shapes.foundation.build import (
    FoundationPaths,
    FoundationSpec,
    build_foundation,
    foundation_spec,
    read_manifest,
)
from vlmforge.shapes.foundation.lm import LMSpec, pretrain_lm
from vlmforge.shapes.foundation.vision import VisionSpec, retrieval_recall_at_1, train_vision_tower

__all__ = [
    "FoundationPaths",
    "FoundationSpec",
    "LMSpec",
    "VisionSpec",
    "build_foundation",
    "foundation_spec",
    "pretrain_lm",
    "read_manifest",
    "retrieval_recall_at_1",
    "train_tokenizer",
    "train_vision_tower",
]
