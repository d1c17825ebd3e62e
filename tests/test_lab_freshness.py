"""Finished lab work is reused only for the inputs it was made from (vlmforge.shapes.lab.freshness)."""

from __future__ import annotations

import json

from vlmforge.shapes.lab.freshness import INPUTS_JSON, set_aside_if_stale, weights_digest


def test_the_same_inputs_keep_the_folder_and_other_inputs_move_it_aside(tmp_path):
    folder = tmp_path / "runs" / "bunny-seed0"
    assert set_aside_if_stale(tmp_path, folder, {"foundation_build": "a", "settings": ("x=1",)}) is None
    (folder / "work.txt").write_text("trained")
    assert set_aside_if_stale(tmp_path, folder, {"foundation_build": "a", "settings": ["x=1"]}) is None
    assert (folder / "work.txt").read_text() == "trained"  # tuples and lists compare as they read back
    aside = set_aside_if_stale(tmp_path, folder, {"foundation_build": "b", "settings": ["x=1"]})
    assert aside is not None and aside.parent == tmp_path / "stale" and aside.name.startswith("bunny-seed0-")
    assert (aside / "work.txt").read_text() == "trained"  # kept, not deleted
    assert list(folder.iterdir()) == [folder / INPUTS_JSON]
    assert json.loads((folder / INPUTS_JSON).read_text())["foundation_build"] == "b"


def test_a_folder_without_a_record_is_reused(tmp_path):
    folder = tmp_path / "runs" / "old"
    folder.mkdir(parents=True)
    (folder / "work.txt").write_text("from an older lab")
    assert set_aside_if_stale(tmp_path, folder, {"foundation_build": "a"}) is None
    assert (folder / "work.txt").exists()


def test_the_weights_digest_changes_with_the_weights_only(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    first = weights_digest(tmp_path)
    (tmp_path / "config.json").write_text('{"changed": 1}')
    assert weights_digest(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert weights_digest(tmp_path) != first
