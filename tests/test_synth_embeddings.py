"""Unicorn stage 3: the embedding store, the transfers' math, and embedding captions with real/tiny encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlmforge.cli import main
from vlmforge.data.embedding_store import EmbeddingStore
from vlmforge.errors import DataError
from vlmforge.models.embedding_vlm.transfer import TransferStats, compute_stats, transfer


def clustered(n: int = 4000, d: int = 64, seed: int = 0) -> torch.Tensor:
    """Unit vectors bunched around one direction, like real caption embeddings (the 'modality cone')."""
    g = torch.Generator().manual_seed(seed)
    centre = F.normalize(torch.randn(d, generator=g), dim=0)
    return F.normalize(3 * centre + torch.randn(n, d, generator=g), dim=-1)


def test_store_round_trip_lookup_and_valid_safetensors(tmp_path):
    from safetensors import safe_open

    x = torch.randn(50, 16)
    ids = [f"rec-{i}" for i in range(50)]
    EmbeddingStore.write(tmp_path / "s", ids, x)
    store = EmbeddingStore.open(tmp_path / "s")
    assert len(store) == 50 and store.dim == 16 and "rec-7" in store and "nope" not in store
    assert store["rec-7"].dtype == torch.float16
    assert torch.equal(store["rec-7"], x[7].half())
    assert torch.equal(store.get_many(["rec-3", "rec-0", "rec-3"]), x[[3, 0, 3]].half())
    with pytest.raises(KeyError, match="nope"):
        store["nope"]
    with safe_open(str(tmp_path / "s" / "embeddings.safetensors"), framework="pt") as f:
        assert torch.equal(f.get_tensor("embeddings"), x.half())
    with pytest.raises(ValueError, match="unique"):
        EmbeddingStore.write(tmp_path / "t", ["a", "a"], torch.zeros(2, 3))
    (tmp_path / "s" / "ids.json").write_text(json.dumps(ids[:-1]))
    with pytest.raises(DataError, match="does not match"):
        EmbeddingStore.open(tmp_path / "s")


def test_mean_shift_centres_and_normalises():
    u = clustered()
    stats = compute_stats(u, chunk=1000)  # chunked accumulation must equal the plain mean
    assert torch.allclose(stats.mean, u.mean(0), atol=1e-5) and stats.n == len(u)
    v = transfer(u, stats, "mean_shift")
    assert torch.allclose(v.norm(dim=-1), torch.ones(len(u)), atol=1e-5)
    assert v.mean(0).norm() < 0.1 * u.mean(0).norm()  # the shared offset is gone
    raw = transfer(u, stats, "mean_shift", renorm=False)  # the released code's form
    assert torch.allclose(raw, u - u.mean(0), atol=1e-5)
    assert raw.mean(0).norm() < 1e-4
    assert torch.allclose(transfer(3 * u, None, "none"), u, atol=1e-6)


def test_c3_noise_scale_and_seed():
    u = clustered(n=3000, d=256)
    stats = compute_stats(u)
    noisy = transfer(u, stats, "c3", renorm=False, sigma=0.126, generator=torch.Generator().manual_seed(1))
    noise = noisy - (u - stats.mean)
    assert abs(noise.std().item() - 0.126) < 0.005 and abs(noise.mean().item()) < 0.005
    normed = transfer(u, stats, "c3", generator=torch.Generator().manual_seed(1))
    assert torch.allclose(normed, F.normalize(noisy, dim=-1), atol=1e-6)  # same seed, same noise
    assert torch.allclose(normed.norm(dim=-1), torch.ones(len(u)), atol=1e-5)


def test_image_side_uses_its_own_mean():
    text, image = clustered(seed=1), clustered(seed=2)  # two cones in different directions
    t = transfer(text, compute_stats(text), "mean_shift")
    i = transfer(image, compute_stats(image), "mean_shift")
    assert (t.mean(0) - i.mean(0)).norm() < 0.1 * (text.mean(0) - image.mean(0)).norm()


def test_stats_save_load(tmp_path):
    stats = compute_stats(clustered(n=100, d=8))
    stats.save(tmp_path, method="mean_shift")
    back = TransferStats.load(tmp_path)
    assert torch.equal(back.mean, stats.mean) and back.n == 100
    assert json.loads((tmp_path / "stats.json").read_text())["method"] == "mean_shift"


def test_cli_embed_minilm_then_transfer(tmp_path):
    records = tmp_path / "records.jsonl"
    caps = [
        "a red circle at the top left",
        "two blue squares",
        "a green triangle",
        "a red circle at the top left",
    ]
    records.write_text("".join(json.dumps({"id": f"r{i}", "caption": c}) + "\n" for i, c in enumerate(caps)))
    assert main(["unicorn", "embed", "--records", str(records), "--out", str(tmp_path / "emb")]) == 0
    store = EmbeddingStore.open(tmp_path / "emb")
    assert store.dim == 384 and store.ids == ["r0", "r1", "r2", "r3"]
    x = store.get_many(store.ids).float()
    assert torch.allclose(x.norm(dim=-1), torch.ones(4), atol=2e-3)
    assert torch.allclose(x[0], x[3], atol=1e-3) and (x[0] @ x[1]) < 0.99  # same text, same vector
    manifest = json.loads((tmp_path / "emb" / "manifest.json").read_text())
    assert manifest["encoder_kind"] == "sentence-transformers" and manifest["n"] == 4

    for method, extra in [("mean_shift", []), ("c3", ["--seed", "3"])]:
        out = tmp_path / method
        assert (
            main(
                [
                    "unicorn",
                    "transfer",
                    "--embeddings",
                    str(tmp_path / "emb"),
                    "--out",
                    str(out),
                    "--method",
                    method,
                    *extra,
                ]
            )
            == 0
        )
        moved = EmbeddingStore.open(out)
        assert moved.ids == store.ids
        expected = transfer(x, compute_stats(x), "mean_shift")
        got = moved.get_many(moved.ids).float()
        if method == "mean_shift":
            assert torch.allclose(got, expected, atol=5e-3)
        else:
            assert not torch.allclose(got, expected, atol=5e-3)
        assert json.loads((out / "stats.json").read_text())["n"] == 4


def test_embed_with_clip_style_text_tower(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    from vlmforge.synth.unicorn.embed import TextEncoder
    from vlmforge.testing.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    text_cfg = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    text_cfg |= {"num_attention_heads": 4, "max_position_embeddings": 64, "eos_token_id": tok.eos_token_id}
    vision_cfg = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
    }
    vision_cfg |= {"image_size": 32, "patch_size": 16}
    config = CLIPConfig(text_config=text_cfg, vision_config=vision_cfg, projection_dim=24)
    CLIPModel(config).save_pretrained(tmp_path / "clip")
    tok.model_max_length = 64
    tok.save_pretrained(tmp_path / "clip")
    enc = TextEncoder(str(tmp_path / "clip"), device="cpu", batch_size=2)
    assert enc.kind == "clip-text"
    out = enc.encode(["a red circle", "two blue squares and a green triangle", "a red circle"])
    assert out.shape == (3, 24) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.allclose(out[0], out[2], atol=1e-5) and not np.allclose(out[0], out[1], atol=1e-3)
