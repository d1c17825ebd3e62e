"""Changing the foundation build's settings: `foundation_spec` (the lab's and the CLI's one way in)."""

from __future__ import annotations

import re

import pytest

from vlmforge.cli import main
from vlmforge.errors import ConfigError
from vlmforge.shapes.foundation.build import FoundationSpec, cli_settings, foundation_spec


def test_overrides_reach_nested_specs_and_take_the_defaults_kind():
    spec = foundation_spec(
        {
            "vision.dense_weight": "2",  # command-line text, read as YAML, made the default's float
            "reader.restart_lr": "0.0005",
            "reader.box_steps": "0",
            "reader.warm_tasks": "[color]",  # a list for a tuple field
            "reader.pass_marks": {"color": 0.95},
            "lm.steps": 12,
            "holdout": 8,
        }
    )
    assert spec.vision.dense_weight == 2.0 and isinstance(spec.vision.dense_weight, float)
    assert spec.reader.box_steps == 0 and spec.reader.restart_lr == 0.0005 and spec.reader.warm_tasks == ("color",)
    assert spec.reader.pass_marks == {"color": 0.95} and spec.lm.steps == 12 and spec.holdout == 8
    # Everything else stays the default, and the default is not changed for the next caller.
    assert spec.vision.epochs == FoundationSpec().vision.epochs and FoundationSpec().vision.dense_weight == 1.0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("vision.dense_wieght", 1.0, "unknown foundation key vision.dense_wieght: vision has image_size"),
        # Settings that were removed are unknown keys now, not ignored.
        ("reader.patch_codes", "true", "unknown foundation key reader.patch_codes: reader has steps"),
        ("vision.place_weight", 1.0, "unknown foundation key vision.place_weight"),
        ("reader.warm_check_every", 2, "unknown foundation key reader.warm_check_every"),
        ("reader.steps.x", 1, "reader.steps is a value, not a section"),
        ("visoin.epochs", 1, "the foundation spec has vocab_size, lm, vision, reader, holdout"),
        ("lm.steps", "1.5", "expected int (the default is 0), got 1.5"),
        ("reader.box_steps", "true", "expected int"),
        ("reader.tasks", "color", "expected tuple"),
    ],
)
def test_a_bad_override_names_its_key(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        foundation_spec({key: value})


def test_cli_settings_need_key_and_value():
    assert cli_settings(["a.b=1", "c= x=y"], "--set") == {"a.b": "1", "c": " x=y"}
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        cli_settings(["vision.epochs"], "--set")


def test_cli_reports_a_bad_setting_before_building(tmp_path, capsys):
    code = main(["foundation", "--world", str(tmp_path), "--out", str(tmp_path / "out"), "--set", "reader.x=1"])
    assert code == 1
    assert "unknown foundation key reader.x: reader has steps" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_lab_size_parts_have_the_foundations_shapes_and_the_worlds_tokenizer(tmp_path):
    """bench/train_throughput.py --lab-size stands in for the foundation with these parts: they must not drift."""
    from transformers import AutoConfig, AutoTokenizer

    from vlmforge.shapes.foundation.build import world_tokenizer
    from vlmforge.shapes.foundation.corpus import read_world
    from vlmforge.shapes.foundation.lm import lm_config
    from vlmforge.shapes.foundation.vision import vision_config
    from vlmforge.shapes.world import WorldConfig, build_world
    from vlmforge.testing.tiny import save_lab_size_parts

    world = build_world(WorldConfig(train_size=30, test_size=5), tmp_path / "world").root
    tokenizer = world_tokenizer(read_world(world, "train"))
    vision, lm = save_lab_size_parts(tmp_path / "lab", tokenizer)
    saved = AutoTokenizer.from_pretrained(lm)
    question = "How many red circles are there in the image?"
    assert (
        saved.get_vocab() == tokenizer.get_vocab() and saved(question)["input_ids"] == tokenizer(question)["input_ids"]
    )
    spec = FoundationSpec()
    lab_lm, built_lm = lm_config(spec.lm, tokenizer).to_dict(), AutoConfig.from_pretrained(lm).to_dict()
    lab_vision, built_vision = vision_config(spec.vision).to_dict(), AutoConfig.from_pretrained(vision).to_dict()
    shape = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    for key in (*shape, "num_key_value_heads", "max_position_embeddings", "vocab_size"):
        assert built_lm[key] == lab_lm[key], key
    for key in (*shape, "image_size", "patch_size"):
        assert built_vision[key] == lab_vision[key], key
