"""What a unified model is trained and saved with besides its weights: the text tokenizer and the image tokenizer.

A saved unified model folder carries its image tokenizer in ``MODEL_DIR/image_tokenizer/``, so the folder alone
is enough to read and draw images. ``UnifiedProcessor`` plays the part of a LLaVA processor for the trainer: its
``save_pretrained`` writes the tokenizer and copies the image tokenizer's folder, in every checkpoint too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from vlmforge.errors import ConfigError
from vlmforge.models.image_tokenizer import LOADER_FILE, ImageTokenizer, load_image_tokenizer
from vlmforge.models.unified.chat_processor import IMAGE_TOKENIZER_DIR


class UnifiedProcessor:
    """The text tokenizer plus the folder of the image tokenizer the model was built for."""

    model_input_names = ["input_ids"]

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_tokenizer_dir: str | Path):
        self.tokenizer = tokenizer
        self.image_tokenizer_dir = Path(image_tokenizer_dir)
        if not (self.image_tokenizer_dir / LOADER_FILE).is_file():
            raise ConfigError(f"'{self.image_tokenizer_dir}' is not a saved image tokenizer (no {LOADER_FILE})")

    @property
    def pad_token_id(self) -> int | None:
        return self.tokenizer.pad_token_id

    def image_tokenizer(self) -> ImageTokenizer:
        return load_image_tokenizer(self.image_tokenizer_dir)

    def save_pretrained(self, out: str | Path, **kwargs) -> None:
        out = Path(out)
        self.tokenizer.save_pretrained(out, **kwargs)
        target = out / IMAGE_TOKENIZER_DIR
        if target.resolve() != self.image_tokenizer_dir.resolve():
            shutil.copytree(self.image_tokenizer_dir, target, dirs_exist_ok=True)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> UnifiedProcessor:
        """A saved unified model folder's tokenizer and image tokenizer."""
        folder = Path(folder)
        if not (folder / IMAGE_TOKENIZER_DIR / LOADER_FILE).is_file():
            raise ConfigError(f"{folder} has no {IMAGE_TOKENIZER_DIR}/ folder; a unified model is saved with one")
        return cls(AutoTokenizer.from_pretrained(folder), folder / IMAGE_TOKENIZER_DIR)
