"""A memory-mapped store of embeddings keyed by record id: one safetensors file + one JSON id list.

Layout of a store directory::

    embeddings.safetensors   tensor "embeddings" [N, D] (float16 by default)
    ids.json                 ["id0", "id1", ...]  row i belongs to ids[i]

Opening reads only the id list (a dict id -> row, O(1) lookup) and maps the tensor file; rows are read from
the page cache on demand, so startup does not depend on N x D and many data-loader workers share one copy.
The file stays a plain safetensors file (``safetensors.safe_open`` reads it); we map its payload with numpy
because per-row reads through ``safe_open`` copy through a slower path.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vlmforge.errors import DataError

TENSOR_FILE, IDS_FILE, TENSOR_NAME = "embeddings.safetensors", "ids.json", "embeddings"
_DTYPES = {"F16": np.float16, "F32": np.float32, "BF16": None}


class EmbeddingStore:
    """Read side; build with ``EmbeddingStore.write`` and load with ``EmbeddingStore.open``."""

    def __init__(self, directory: Path, ids: list[str], array: np.ndarray):
        self.directory, self.ids, self.array = Path(directory), ids, array
        self.index = {rid: row for row, rid in enumerate(ids)}
        if len(self.index) != len(ids):
            raise DataError(str(self.directory / IDS_FILE), "ids are not unique", code="duplicate_id")

    @staticmethod
    def write(directory: Path, ids: Sequence[str], array: np.ndarray | torch.Tensor, dtype: str = "float16") -> Path:
        """Save ``array`` [N, D] with row ids; returns the directory."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensor = torch.as_tensor(array).to(getattr(torch, dtype)).contiguous()
        ids = [str(i) for i in ids]
        if tensor.ndim != 2 or tensor.shape[0] != len(ids):
            raise ValueError(f"need a [N, D] array with N = len(ids) = {len(ids)}, got {tuple(tensor.shape)}")
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique")
        save_file({TENSOR_NAME: tensor}, str(directory / TENSOR_FILE), metadata={"format": "pt", "n": str(len(ids))})
        (directory / IDS_FILE).write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
        return directory

    @classmethod
    def open(cls, directory: Path) -> EmbeddingStore:
        directory = Path(directory)
        tensor_path, ids_path = directory / TENSOR_FILE, directory / IDS_FILE
        for p in (tensor_path, ids_path):
            if not p.is_file():
                raise DataError(str(p), "missing; is this an embedding store directory?", code="missing")
        ids = json.loads(ids_path.read_text(encoding="utf-8"))
        return cls(directory, ids, _map_safetensors(tensor_path, TENSOR_NAME, len(ids)))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.index

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    def __getitem__(self, record_id: str) -> torch.Tensor:
        try:
            row = self.index[record_id]
        except KeyError:
            raise KeyError(f"no embedding for record id {record_id!r} in {self.directory}") from None
        return torch.from_numpy(np.array(self.array[row]))  # copy: the map is read-only

    def get_many(self, ids: Sequence[str]) -> torch.Tensor:
        """[len(ids), D] in the order given."""
        rows = np.fromiter((self.index[i] for i in ids), dtype=np.int64, count=len(ids))
        return torch.from_numpy(self.array[rows])  # fancy indexing already copies

    def as_tensor(self) -> torch.Tensor:
        """All rows in memory (for statistics / transfers over the whole set)."""
        return torch.from_numpy(np.array(self.array))


def _map_safetensors(path: Path, name: str, n_rows: int) -> np.ndarray:
    """numpy memmap of one tensor in a safetensors file (format: u64 header size, JSON header, raw payload)."""
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    info = header.get(name)
    if info is None or _DTYPES.get(info["dtype"]) is None:
        raise DataError(str(path), f"needs a float16/float32 tensor named {name!r}", code="bad_store")
    start, end = info["data_offsets"]
    shape = tuple(info["shape"])
    itemsize = np.dtype(_DTYPES[info["dtype"]]).itemsize
    if len(shape) != 2 or shape[0] != n_rows or end - start != shape[0] * shape[1] * itemsize:
        raise DataError(str(path), f"tensor shape {shape} does not match {n_rows} ids", code="bad_store")
    if shape[0] == 0:
        return np.zeros(shape, dtype=_DTYPES[info["dtype"]])
    return np.memmap(path, dtype=_DTYPES[info["dtype"]], mode="r", offset=8 + header_len + start, shape=shape)
