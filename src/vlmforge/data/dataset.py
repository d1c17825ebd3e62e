"""A torch ``Dataset`` of encoded conversation records: validation up front, images and tokens on demand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vlmforge.data.chat import EncodedSample, Template, encode_conversation, image_seq_length
from vlmforge.data.images import DEFAULT_MAX_PIXELS, load_image
from vlmforge.data.memory_cache import MemoryCache
from vlmforge.data.records import OnError, Rejections, check_on_error, read_records, record_where, reject
from vlmforge.data.validate import image_paths, record_embedding, validate_record
from vlmforge.errors import ConfigError, DataError


class ConversationDataset(Dataset):
    """LLaVA records -> ``{"input_ids", "labels", "pixel_values"?}`` samples for a LLaVA processor.

    ``records`` is a records file/folder (then images resolve against its folder unless ``image_folder`` is given)
    or a list of records. Construction validates every record (cheap: structure and image existence); decoding
    images and tokenising happen per item, so nothing big is held. With ``on_error="skip"`` bad records are
    counted in ``rejections``; an item that fails only when loaded (corrupt image, too long) comes back as
    ``None``, which the vlmforge collators drop. With DataLoader workers, those late rejections are counted in the
    worker processes; call :meth:`compute_lengths` first (packing does) to catch ``too_long`` up front.
    ``image_cache_bytes`` > 0 keeps processed images, and ``token_cache_bytes`` > 0 each item's token ids, in memory
    up to that many bytes (per process), so later epochs skip decoding, preprocessing, rendering and tokenising
    (:mod:`vlmforge.data.memory_cache`).

    Records with ``image_embedding`` (an id) instead of ``image`` read their vector from ``embeddings`` (an
    ``EmbeddingStore`` or any id -> tensor mapping) and yield ``image_embeds`` [1, D] for the embedding-input VLM.
    """

    def __init__(
        self,
        records: str | Path | Sequence[dict],
        processor: Any,
        *,
        image_folder: str | Path | None = None,
        template: Template = "chat",
        max_length: int = 2048,
        on_error: OnError = "raise",
        rejections: Rejections | None = None,
        source: str = "records",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        embeddings: Mapping[str, torch.Tensor] | None = None,
        image_cache_bytes: int = 0,
        token_cache_bytes: int = 0,
    ):
        check_on_error(on_error)
        self.pixel_cache = MemoryCache(image_cache_bytes, "image cache")
        self.token_cache = MemoryCache(token_cache_bytes, "token cache")
        self.processor, self.template, self.max_length = processor, template, max_length
        self.on_error, self.max_pixels, self.embeddings = on_error, max_pixels, embeddings
        self.rejections = rejections if rejections is not None else Rejections()
        if isinstance(records, (str, Path)):
            located = read_records(records, on_error=on_error, rejections=self.rejections)
            if image_folder is None:
                image_folder = Path(records) if Path(records).is_dir() else Path(records).parent
        else:
            located = [(record_where(source, record, i), record) for i, record in enumerate(records)]
        self.image_folder = image_folder
        items: list[tuple[str, dict]] = []
        for where, record in located:
            if embeddings is None and isinstance(record, dict) and record.get("image_embedding") is not None:
                raise ConfigError(
                    f"{where}: the record has 'image_embedding' but no embedding store is configured "
                    "(set the stage's data.embeddings to the store folder)"
                )
            try:
                items.append((where, validate_record(record, where, image_folder, embeddings)))
            except DataError as err:
                reject(err, on_error, self.rejections)
        self.items = items
        self._lengths: list[int] | None = None

    @property
    def items(self) -> list[tuple[str, dict]]:
        """(where, validated record) pairs; replacing the list (a subset, reworded records) drops the cached tokens,
        which are kept by index."""
        return self._items

    @items.setter
    def items(self, items: list[tuple[str, dict]]) -> None:
        self._items = items
        self.token_cache.clear()

    def __len__(self) -> int:
        return len(self.items)

    def _encode(self, index: int, pixel_values=None) -> EncodedSample:
        where, record = self.items[index]
        image_tokens = None
        embedding = record_embedding(record, where)
        if pixel_values is None and (record.get("image") or embedding):
            image_tokens = self._image_tokens()
        if embedding is not None:  # chat encoding counts image slots in "image"; the embedding fills this one
            record = {**record, "image": [embedding]}
        return encode_conversation(
            record,
            self.processor,
            template=self.template,
            max_length=self.max_length,
            pixel_values=pixel_values,
            image_tokens=image_tokens,
            where=where,
        )

    def _image_tokens(self) -> int:
        if not hasattr(self, "_per_image"):
            self._per_image = image_seq_length(self.processor)
        return self._per_image

    def load_pixel_values(self, index: int) -> torch.Tensor | None:
        """The processed images of item ``index`` (``(n_images, C, H, W)``), or None for a text-only record."""
        where, record = self.items[index]
        paths = image_paths(record, self.image_folder, where)
        if not paths:
            return None

        def load() -> torch.Tensor:
            images = [load_image(path, where, max_pixels=self.max_pixels) for path in paths]
            return self.processor.image_processor(images, return_tensors="pt")["pixel_values"]

        return self.pixel_cache.get(tuple(str(path) for path in paths), load)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        try:
            pixel_values = self.load_pixel_values(index)
            input_ids, labels = self.token_cache.get(index, lambda: self._token_tensors(index, pixel_values))
        except DataError as err:
            reject(err, self.on_error, self.rejections)
            return None
        item = {"input_ids": input_ids, "labels": labels}
        if pixel_values is not None:
            item["pixel_values"] = pixel_values
        embedding = record_embedding(self.items[index][1])
        if embedding is not None:
            item["image_embeds"] = self.embeddings[embedding].float().reshape(1, -1)
        return item

    def _token_tensors(self, index: int, pixel_values) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self._encode(index, pixel_values)
        return torch.tensor(sample.input_ids, dtype=torch.long), torch.tensor(sample.labels, dtype=torch.long)

    def compute_lengths(self) -> list[int]:
        """Token length of every item (images expanded), without decoding images. With ``on_error="skip"``,
        records that cannot be encoded (``too_long``, ...) are removed here and counted."""
        if self._lengths is None:
            kept, lengths = [], []
            for index, item in enumerate(self.items):
                try:
                    lengths.append(len(self._encode(index)))
                    kept.append(item)
                except DataError as err:
                    reject(err, self.on_error, self.rejections)
            self.items, self._lengths = kept, lengths
        return self._lengths
