"""Training data for the embedding-input VLM (Unicorn): the embedding store a stage reads, and shapes-world
records whose image slot is filled by a caption embedding instead of the image.

The store holds vectors already moved into the image-embedding space by ``vlmforge unicorn transfer`` (none /
mean_shift / c3); training reads them as they are, so a c3 store's noise is drawn once per record, not per epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmforge.data.embedding_store import EmbeddingStore
from vlmforge.errors import ConfigError
from vlmforge.models.embedding_vlm.transfer import STATS_JSON


def open_embeddings(directory: str | Path | None, model_config: Any = None) -> EmbeddingStore | None:
    """Open a stage's ``data.embeddings`` store and check it fits the model (``embed_dim``). When the store was made
    by ``vlmforge unicorn transfer``, its method is recorded in the model config (``transfer_method``)."""
    if not directory:
        return None
    store = EmbeddingStore.open(Path(directory))
    expected = getattr(model_config, "embed_dim", None)
    if expected is None and model_config is not None:
        raise ConfigError(
            f"data.embeddings is set ({directory}) but the model takes no image embeddings; "
            "use model.architecture: embedding_vlm"
        )
    if expected is not None and store.dim != expected:
        raise ConfigError(f"embedding store {directory} holds {store.dim}-d vectors; the model expects {expected}-d")
    stats = Path(directory) / STATS_JSON
    if model_config is not None and stats.is_file():
        model_config.transfer_method = json.loads(stats.read_text()).get("method")
    return store


def embed_world_captions(
    world_dir: str | Path,
    out_dir: str | Path,
    encoder: str | None = None,
    split: str = "train",
    field: str = "detailed_caption",
) -> dict[str, Any]:
    """Embed each training image's caption (``field`` of the world's ``captions.jsonl``) into one EmbeddingStore
    keyed by image id (``scene_id``), and rewrite the split's record files so that ``image`` becomes
    ``image_embedding`` pointing into it. Writes ``OUT/embeddings/`` and ``OUT/<file>.jsonl`` for every record
    file of the split; transfer the store with ``vlmforge.synth.unicorn.transfer.transfer_store`` afterwards.
    ``encoder``: a sentence-transformers folder (default: all-MiniLM-L6-v2, the space of the tiny vision tower).
    """
    from vlmforge.data.records import read_records
    from vlmforge.synth.unicorn.embed import TextEncoder

    world, out = Path(world_dir), Path(out_dir)
    split_dir = world / split
    texts: dict[str, str] = {}
    for where, record in read_records(split_dir / "captions.jsonl"):
        if field not in record:
            raise ConfigError(f"{where}: no '{field}' field to embed")
        texts.setdefault(record.get("scene_id", record["id"]), record[field])
    ids = list(texts)
    EmbeddingStore.write(out / "embeddings", ids, TextEncoder(encoder, device="cpu").encode([texts[i] for i in ids]))
    counts = {}
    for path in sorted(split_dir.glob("*.jsonl")):
        records = [r for _, r in read_records(path)]
        if not any(r.get("image") and r.get("conversations") for r in records):
            continue  # e.g. scenes.jsonl: scene descriptions, not training records
        with (out / path.name).open("w", encoding="utf-8") as f:
            for record in records:
                record = dict(record)
                image = record.pop("image", None)
                if image:
                    record["image_embedding"] = record.get("scene_id") or Path(image).stem
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        counts[path.name] = len(records)
    return {"store": str(out / "embeddings"), "n_embeddings": len(ids), "records": counts, "field": field}
