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
