"""Training the embedding-input VLM: text-only (caption embeddings from a store) and the image-trained control."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from test_embedding_vlm import COLOURS, EMBED_DIM, image, parts  # noqa: F401  (fixture re-used)
from vlmforge.data.collate import PaddingCollator
from vlmforge.data.dataset import ConversationDataset
from vlmforge.data.embedding_store import EmbeddingStore
from vlmforge.errors import ConfigError, DataError
from vlmforge.models.embedding_vlm import assemble_embedding_vlm
from vlmforge.runtime import Conversation, SamplingParams, VisionLanguageModel
from vlmforge.synth.unicorn.transfer import transfer_store
from vlmforge.train.embedding_data import embed_world_captions
from vlmforge.train.recipe import recipe_from_dict
from vlmforge.train.stage import run_recipe
from vlmforge.train.trainable import configure_trainable


def write_records(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def colour_records(kind: str) -> list[dict]:
    """Four colours x 4 = 16 records; kind 'embedding' names a store row, 'image' a file (the control)."""
    records = []
    for i in range(16):
        colour = list(COLOURS)[i % 4]
        slot = {"image_embedding": colour} if kind == "embedding" else {"image": f"{colour}.png"}
        records.append(
            {
                "id": f"r{i}",
                **slot,
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour is the shape?"},
                    {"from": "gpt", "value": colour},
                ],
            }
        )
    return records


@pytest.fixture
def text_only_data(tmp_path):
    raw = tmp_path / "raw"
    EmbeddingStore.write(raw, list(COLOURS), F.normalize(torch.randn(len(COLOURS), EMBED_DIM), dim=-1))
    transfer_store(raw, tmp_path / "shifted", "mean_shift")
    return write_records(tmp_path / "qa.jsonl", colour_records("embedding")), tmp_path / "shifted"


def recipe(out: Path, data: Path, model_parts, embeddings: Path | None, batching: str = "auto") -> dict:
    stage = {
        "data": {"path": str(data), **({"embeddings": str(embeddings)} if embeddings else {})},
        "learning_rate": 1e-2,
        "global_batch_size": 4,
        "per_device_batch_size": 4,
        "max_steps": 2,
        "logging_steps": 1,
        "save_steps": 100,
        "max_length": 128,
    }
    return {"name": "emb", "output_dir": str(out), "seed": 1,
            "model": {"architecture": "embedding_vlm", "vision_model": str(model_parts[0]),
                      "language_model": str(model_parts[1]),
                      "num_visual_tokens": 4},
            "stages": {"pretrain": dict(stage), "finetune": {**stage, "batching": batching}}}  # fmt: skip


def weights(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path)
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_text_only_training_moves_projector_then_lm_and_runs_on_real_images(tmp_path, text_only_data, parts):  # noqa: F811
    data, store = text_only_data
    final = run_recipe(recipe_from_dict(recipe(tmp_path / "run", data, parts, store, batching="packing")))
    pretrain, base = tmp_path / "run" / "pretrain" / "final", tmp_path / "base"
    model, processor = assemble_embedding_vlm(str(parts[1]), str(parts[0]), num_visual_tokens=4)
    model.save_pretrained(base)
    assert changed(weights(base, "multi_modal_projector"), weights(pretrain, "multi_modal_projector"))
    assert not changed(weights(base, "language_model"), weights(pretrain, "language_model"))
    assert changed(weights(pretrain, "language_model"), weights(final, "language_model"))
    assert not changed(weights(base, "vision_tower"), weights(final, "vision_tower"))  # the encoder stays frozen
    manifest = json.loads((tmp_path / "run" / "finetune" / "manifest.json").read_text())
    assert manifest["batching"]["mode"] == "packing" and manifest["batching"]["row_length"] % 64 == 0
    assert json.loads((final / "config.json").read_text())["transfer_method"] == "mean_shift"
    vlm = VisionLanguageModel.from_pretrained(final, device="cpu")
    out = vlm.generate([Conversation.single_turn("What colour is the shape?", [image("red")])], SamplingParams(4))
    assert out[0].completion_tokens >= 0 and out[0].prompt_tokens > 4


def test_image_trained_control_uses_the_frozen_encoder(tmp_path, parts):  # noqa: F811
    for colour in COLOURS:
        image(colour).save(tmp_path / f"{colour}.png")
    data = write_records(tmp_path / "qa.jsonl", colour_records("image"))
    spec = recipe(tmp_path / "run", data, parts, None)
    del spec["stages"]["pretrain"]
    final = run_recipe(recipe_from_dict(spec))
    model, _ = assemble_embedding_vlm(str(parts[1]), str(parts[0]), num_visual_tokens=4)
    model.save_pretrained(tmp_path / "base")
    assert changed(weights(tmp_path / "base", "multi_modal_projector"), weights(final, "multi_modal_projector"))
    assert not changed(weights(tmp_path / "base", "vision_tower"), weights(final, "vision_tower"))


def test_dataset_yields_image_embeds_and_reports_store_problems(tmp_path, text_only_data, parts):  # noqa: F811
    data, store_dir = text_only_data
    _, processor = assemble_embedding_vlm(str(parts[1]), str(parts[0]), num_visual_tokens=4)
    store = EmbeddingStore.open(store_dir)
    dataset = ConversationDataset(data, processor, embeddings=store)
    batch = PaddingCollator(processor.tokenizer.pad_token_id)([dataset[0], dataset[1]])
    assert batch["image_embeds"].shape == (2, EMBED_DIM)
    assert torch.allclose(batch["image_embeds"][0], store["red"].float())
    assert int((batch["input_ids"][0] == processor.image_token_id).sum()) == 4
    with pytest.raises(ConfigError, match=r"qa.jsonl:1.*data.embeddings"):
        ConversationDataset(data, processor)
    other = tmp_path / "other"
    EmbeddingStore.write(other, ["red"], torch.zeros(1, EMBED_DIM))
    with pytest.raises(DataError, match="no embedding for id 'green'") as err:
        ConversationDataset(data, processor, embeddings=EmbeddingStore.open(other))
    assert err.value.code == "missing_embedding"
    both = {
        "id": "x",
        "image": "a.png",
        "image_embedding": "red",
        "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "red"}],
    }
    with pytest.raises(DataError, match="not both"):
        ConversationDataset([both], processor, embeddings=store)


def test_recipe_errors_are_clear(tmp_path, text_only_data, parts):  # noqa: F811
    data, _ = text_only_data
    wrong_dim = tmp_path / "wrong"
    EmbeddingStore.write(wrong_dim, list(COLOURS), torch.zeros(4, EMBED_DIM + 1))
    with pytest.raises(ConfigError, match="25-d vectors; the model expects 24-d"):
        run_recipe(recipe_from_dict(recipe(tmp_path / "a", data, parts, wrong_dim)))
    with pytest.raises(ConfigError, match="data.embeddings"):
        run_recipe(recipe_from_dict(recipe(tmp_path / "b", data, parts, None)))
    bad = recipe(tmp_path / "c", data, parts, None)
    bad["model"]["architecture"] = "nope"
    with pytest.raises(ConfigError, match="choose one of llava, embedding_vlm"):
        run_recipe(recipe_from_dict(bad))
    model, _ = assemble_embedding_vlm(str(parts[1]), str(parts[0]), num_visual_tokens=4)
    stage = recipe_from_dict(recipe(tmp_path / "d", data, parts, None)).stages["finetune"]
    stage.unfreeze_vision = True
    with pytest.raises(ConfigError, match="unfreeze_vision"):
        configure_trainable(model, stage)


def test_embed_world_captions_writes_a_store_and_embedding_records(tmp_path):
    from vlmforge.shapes.world import WorldConfig, build_world

    build_world(WorldConfig(train_size=6, test_size=2), tmp_path / "world")
    summary = embed_world_captions(tmp_path / "world", tmp_path / "emb")
    store = EmbeddingStore.open(tmp_path / "emb" / "embeddings")
    assert len(store) == 6 and store.dim == 384 and summary["n_embeddings"] == 6
    records = [json.loads(line) for line in (tmp_path / "emb" / "conversations.jsonl").read_text().splitlines()]
    assert records and all("image" not in r and r["image_embedding"] in store for r in records)
    assert (tmp_path / "emb" / "captions.jsonl").is_file() and "scenes.jsonl" not in summary["records"]


def test_lora_finetune_targets_only_the_lm_body(tmp_path, text_only_data, parts):  # noqa: F811
    from vlmforge.train.trainable import lm_linear_module_names

    model, _ = assemble_embedding_vlm(str(parts[1]), str(parts[0]), num_visual_tokens=4)
    targets = lm_linear_module_names(model)
    assert targets and all(t.startswith("language_model.model.") for t in targets)  # no lm_head, projector, encoder
    data, store = text_only_data
    spec = recipe(tmp_path / "run", data, parts, store)
    del spec["stages"]["pretrain"]
    spec["stages"]["finetune"].update(tune="lora", lora={"r": 4, "alpha": 8})
    final = run_recipe(recipe_from_dict(spec))
    base = tmp_path / "run" / "finetune" / "base"
    assert changed(weights(base, "language_model"), weights(final, "language_model"))
    assert changed(weights(base, "multi_modal_projector"), weights(final, "multi_modal_projector"))
