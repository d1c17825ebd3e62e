"""The commands on a unified model folder: `generate-image` finds the folder's own image tokenizer, `chat` answers,
and bad input (a tokenizer that does not fit, cfg < 0, a prompt longer than the context) is a one-line error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from unified_helpers import save_unified_folder, scene, tiny_patch_tokenizer
from vlmforge.cli import main
from vlmforge.models.unified.chat_processor import IMAGE_TOKENIZER_DIR
from vlmforge.runtime import Conversation, SamplingParams, VisionLanguageModel


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_unified_folder(tmp_path_factory.mktemp("unified_commands") / "uni", max_positions=48)


def draw(folder, out, *extra: str) -> int:
    return main(["generate-image", "--model", str(folder), "--prompt", "a red circle", "--out", str(out), *extra])


def test_generate_image_defaults_to_the_folders_image_tokenizer(folder, tmp_path, capsys):
    assert draw(folder, tmp_path / "a", "--top-k", "3") == 0
    line = json.loads((tmp_path / "a" / "images.jsonl").read_text())
    assert len(line["codes"]) == 4
    # Overriding with a different tokenizer of the same codebook and grid draws the same codes differently.
    other = tiny_patch_tokenizer(seed=1).save(tmp_path / "other")
    assert draw(folder, tmp_path / "b", "--top-k", "3", "--image-tokenizer", str(other)) == 0
    again = json.loads((tmp_path / "b" / "images.jsonl").read_text())
    assert again["codes"] == line["codes"]
    assert (tmp_path / "a" / line["file"]).read_bytes() != (tmp_path / "b" / again["file"]).read_bytes()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cfg", "-1"], "cfg must be >= 0"),
        (["--prompt", "red " * 60], "exceeds the model's context of 48 tokens"),
        (["--image-tokenizer", "BIG"], "the image tokenizer has 12 codes but the model holds 8"),
    ],
)
def test_generate_image_refuses_bad_input_in_one_line(folder, tmp_path, capsys, extra, message):
    big = tiny_patch_tokenizer(codebook=12).save(tmp_path / "big")
    extra = [str(big) if item == "BIG" else item for item in extra]
    assert draw(folder, tmp_path / "out", *extra) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "00000.png").exists()


def test_a_folder_without_its_image_tokenizer_is_named(folder, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns(IMAGE_TOKENIZER_DIR))
    assert draw(bare, tmp_path / "out") == 1
    assert f"has no {IMAGE_TOKENIZER_DIR}/ folder" in capsys.readouterr().err
    assert main(["chat", "--model", str(bare), "hello"]) == 1


def test_chat_answers_and_refuses_a_question_longer_than_the_context(folder, tmp_path, capsys):
    torch.set_num_threads(1)
    scene(2).save(tmp_path / "q.png")
    assert main(["chat", "--model", str(folder), "--image", str(tmp_path / "q.png"), "--max-tokens", "6",
                 "What colour?"]) == 0  # fmt: skip
    printed = capsys.readouterr().out.strip()
    vlm = VisionLanguageModel.from_pretrained(folder)
    expected = vlm.generate([Conversation.single_turn("What colour?", [scene(2)])], SamplingParams(6))[0].text
    assert printed == expected and expected
    assert main(["chat", "--model", str(folder), "--image", str(tmp_path / "q.png"), "red " * 60]) == 1
    assert "This model's maximum context length is 48 tokens; the prompt has 77 tokens" in capsys.readouterr().err
