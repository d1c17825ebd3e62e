"""Tiny foundation models: tokenizer, LM pretraining, LiT vision tower, cached build, LLaVA assembly."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
)

from vlmforge.cli import main
from vlmforge.errors import DataError
from vlmforge.models.assemble import IMAGE_TOKEN, AssemblySpec, assemble_llava
from vlmforge.models.tokenizer import train_tokenizer
from vlmforge.shapes.foundation.build import FoundationSpec, build_foundation, read_manifest
from vlmforge.shapes.foundation.corpus import grounded_questions, read_world
from vlmforge.shapes.foundation.lm import LMSpec, pretrain_lm
from vlmforge.shapes.foundation.reader import ReaderSpec
from vlmforge.shapes.foundation.reading import score_reading
from vlmforge.shapes.foundation.vision import VisionSpec

COLORS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220)}
CELLS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
TINY_LM = LMSpec(
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=64,
    block_size=32,
    batch_size=8,
    steps=30,
    lr=3e-3,
    warmup_steps=5,
)
TINY_VISION = VisionSpec(
    image_size=64,
    patch_size=21,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    mlp_ratio=2,
    batch_size=16,
    epochs=6,
    lr=3e-3,
    warmup_steps=3,
)
# Builds only need to run end to end: a few steps each.
BUILD_SPEC = FoundationSpec(
    vocab_size=300,
    lm=replace(TINY_LM, steps=8),
    vision=replace(TINY_VISION, epochs=2),
    # 4 steps would never pass: no marks, no restarts
    reader=ReaderSpec(steps=4, batch_size=4, box_steps=2, pass_marks={}, warm_marks={}),
    holdout=8,
)


def draw_scene(color: str, shape: str, cell: int) -> Image.Image:
    """One flat shape in one cell of a 3x3 grid: a throwaway stand-in for the real shapes world."""
    image = Image.new("RGB", (64, 64), (240, 240, 240))
    row, col = divmod(cell, 3)
    box = (col * 21 + 3, row * 21 + 3, col * 21 + 18, row * 21 + 18)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLORS[color])
    return image


def scenes(n: int, seed: int = 0) -> list[tuple[Image.Image, str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        color, shape, cell = rng.choice(list(COLORS)), rng.choice(["circle", "square"]), rng.randrange(9)
        out.append((draw_scene(color, shape, cell), f"a {color} {shape}", f"a {color} {shape} at the {CELLS[cell]}"))
    return out


def write_world(root: Path, n: int = 32) -> Path:
    """The world folder layout the CLI reads: world.json, images/train/*.png, train/*.jsonl."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "train").mkdir()
    (root / "world.json").write_text(json.dumps({"seed": 0}))
    captions, instruct, scene_rows = [], [], []
    for i, (image, short, detailed) in enumerate(scenes(n)):
        rel = f"images/train/s{i}.png"
        image.save(root / rel)
        color, shape = short.split()[1:]
        cell = CELLS.index(detailed.split(" at the ")[1])
        row, col = divmod(cell, 3)
        box = [(col * 21 + 3) / 64, (row * 21 + 3) / 64, (col * 21 + 18) / 64, (row * 21 + 18) / 64]
        scene_rows.append({"id": f"s{i}", "objects": [{"shape": shape, "color": color, "box": box}]})
        human = {"from": "human", "value": f"{IMAGE_TOKEN}\nWhat color is the shape?"}
        captions.append(
            {
                "id": f"s{i}",
                "image": rel,
                "caption": short,
                "detailed_caption": detailed,
                "conversations": [{"from": "human", "value": IMAGE_TOKEN}, {"from": "gpt", "value": short}],
            }
        )
        instruct.append(
            {
                "id": f"q{i}",
                "image": rel,
                "task": "color",
                "answer": color,
                "conversations": [human, {"from": "gpt", "value": color}],
            }
        )
    files = (
        ("captions", captions),
        ("instruct", instruct),
        ("conversations", instruct[:5]),
        ("scenes", scene_rows),
    )
    for name, rows in files:
        (root / "train" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def built(world, tmp_path_factory, text_model):
    out = tmp_path_factory.mktemp("foundation")
    return build_foundation(world, out, BUILD_SPEC, seed=0, text_model=text_model, progress=False)


def test_tokenizer_round_trips_and_renders_chat():
    texts = [detailed for _, _, detailed in scenes(30)] + ["What color is the shape? red"] * 10
    tok = train_tokenizer(texts, vocab_size=300)
    sample = "a green square at the bottom right; ünïcode and 42 too"
    assert tok.decode(tok(sample)["input_ids"]) == sample  # byte-level: even unseen characters survive
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN):
        ids = tok(f"x {special} y", add_special_tokens=False)["input_ids"]
        assert tok.convert_tokens_to_ids(special) in ids and len(tok.tokenize(special)) == 1
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What color?"}, {"role": "assistant", "content": "red"}], tokenize=False
    )
    assert chat == "<|im_start|>user\nWhat color?<|im_end|>\n<|im_start|>assistant\nred<|im_end|>\n"
    # The template's role words are single tokens although the training texts never contain them.
    assert not any("assistant" in text for text in texts)
    assert [len(tok.tokenize(word)) for word in ("user", "assistant")] == [1, 1]


def test_saved_tokenizer_encodes_as_the_trained_one_when_loaded_with_its_lm(tmp_path):
    """AutoTokenizer loads a Qwen2 LM's folder as Qwen2Tokenizer, which rebuilds its own pre-tokenization: the
    trained tokenizer must already use it, or boxes and other numbers become different tokens once saved."""
    texts = [detailed for _, _, detailed in scenes(200)]
    boxes = ["[0.688,0.703,0.969,0.984]", "[0.031,0.375,0.297,0.625]", "There are 12 objects, 3 red."]
    tok = train_tokenizer(texts + boxes * 50, vocab_size=300)
    model, _ = pretrain_lm(tok, texts[:8], replace(TINY_LM, steps=1), seed=0, progress=False)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    chat = [{"role": "user", "content": "<image>\nGive the bounding box of the red circle."},
            {"role": "assistant", "content": boxes[0]}]  # fmt: skip
    for text in [*boxes, texts[0], "Ünïcode  spaces\n\nand 2024", tok.apply_chat_template(chat, tokenize=False)]:
        assert loaded(text)["input_ids"] == tok(text)["input_ids"], text


def test_lm_pretraining_lowers_loss_and_saves_a_standard_model(tmp_path):
    texts = [detailed for _, _, detailed in scenes(200)]
    tok = train_tokenizer(texts, vocab_size=300)
    model, log = pretrain_lm(tok, texts, TINY_LM, seed=0, progress=False)
    assert log.final_loss < 0.7 * log.first_loss
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, tok2 = AutoModelForCausalLM.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    ids = tok2("a red circle at the top", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)
    assert loaded.config.tie_word_embeddings and tok2.chat_template


def test_build_writes_manifest_and_is_reused(built, world, text_model, capsys):
    manifest = read_manifest(built.root)
    text = manifest["lm"]["text_pretraining"]
    assert not built.reused and text["final_loss"] < text["first_loss"]
    assert {"short", "detailed"} <= set(manifest["vision"]["retrieval"])
    assert manifest["lm"]["reading_accuracy"] is None  # no test split in this world: nothing to read
    again = build_foundation(world, built.root, BUILD_SPEC, seed=0, text_model=text_model, progress=False)
    assert again.reused and "reusing" in capsys.readouterr().out
    assert read_manifest(built.root)["build_id"] == manifest["build_id"]


def test_reading_test_puts_the_description_before_the_question(world):
    questions = grounded_questions(world, "train", ("color",))
    assert len(questions) == 32 and all(q.task == "color" for q in questions)

    def oracle(conversations):  # reads the colour from the description, as a model that can read would
        return [next(c for c in COLORS if f"a {c} " in conv[0]["content"]) for conv in conversations]

    assert score_reading(questions, oracle, batch_size=5) == {"color": 1.0}
    truth = [q.answer for q in questions]
    assert score_reading(questions, lambda convs: ["RED"] * len(convs)) == {"color": truth.count("red") / 32}


def test_build_records_the_lm_reading_accuracy_when_the_world_has_a_test_split(world, tmp_path, text_model):
    with_test = shutil.copytree(world, tmp_path / "w")
    shutil.copytree(with_test / "train", with_test / "test")
    built = build_foundation(with_test, tmp_path / "f", BUILD_SPEC, seed=0, text_model=text_model, progress=False)
    lm_record = read_manifest(built.root)["lm"]
    reading, object_reading = lm_record["reading_accuracy"], lm_record["object_reading_accuracy"]
    assert set(reading) == {"color"} and 0.0 <= reading["color"] <= 1.0
    # The reading phase's own held-out test: every question type the world asks that the phase taught.
    assert set(object_reading) == {"color"} and 0.0 <= object_reading["color"] <= 1.0


def test_build_retrains_when_the_seed_changes(built, world, tmp_path, text_model):
    copy = shutil.copytree(built.root, tmp_path / "copy")
    first_id = read_manifest(copy)["build_id"]
    second = build_foundation(world, copy, BUILD_SPEC, seed=1, text_model=text_model, progress=False)
    assert not second.reused and read_manifest(copy)["build_id"] != first_id


def test_llava_assembles_from_the_foundation_dirs(built, world):
    model, processor = assemble_llava(AssemblySpec(str(built.vision), str(built.lm)))
    assert model.config.vision_feature_select_strategy == "default"  # CLIP tower: CLS token dropped
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.open(world / "images" / "train" / "s0.png")
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == (64 // 21) ** 2
    with torch.no_grad():
        assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_bad_record_names_file_and_line(world, tmp_path):
    broken = tmp_path / "w"
    broken.mkdir()
    for item in world.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "train").unlink()
    (broken / "train").mkdir()
    for name in ("instruct.jsonl", "conversations.jsonl"):
        (broken / "train" / name).write_text((world / "train" / name).read_text())
    good = (world / "train" / "captions.jsonl").read_text().splitlines()
    (broken / "train" / "captions.jsonl").write_text("\n".join([good[0], '{"id": "x", "conversations": []}']) + "\n")
    with pytest.raises(DataError) as err:
        read_world(broken)
    assert err.value.where.endswith("captions.jsonl:2")


def test_world_regions_come_from_the_scene_annotations(world, tmp_path):
    read = read_world(world)
    assert len(read.regions) == len(read.image_paths)
    ((box, phrase),) = read.regions[0]
    assert phrase == read.captions[0] and len(box) == 4
    broken = shutil.copytree(world, tmp_path / "w")
    (broken / "train" / "scenes.jsonl").write_text('{"id": "s0", "objects": [{"box": [0, 0, 1, 1]}]}\n')
    with pytest.raises(DataError) as err:
        read_world(broken)
    assert err.value.where.endswith("scenes.jsonl:1")


def test_cli_reports_a_missing_world_as_one_line(tmp_path, capsys):
    assert main(["foundation", "--world", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 1
    assert "world.json" in capsys.readouterr().err


def test_cli_builds_then_reuses(world, tmp_path, capsys):
    args = [
        "foundation",
        "--world",
        str(world),
        "--out",
        str(tmp_path),
        "--reader-steps",
        "2",
        "--box-steps",
        "1",
        "--reader-attempts",
        "1",
        "--lm-steps",
        "2",
        "--vision-epochs",
        "1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    first = json.loads(out[out.index("\n{") :])  # progress lines first, then the JSON summary
    assert first["reused"] is False and Path(first["lm"], "config.json").is_file()
    spec = read_manifest(tmp_path)["spec"]["reader"]
    assert spec["box_steps"] == 1 and spec["attempts"] == 1
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("foundation: reusing") and json.loads(out[out.index("{") :])["reused"] is True
    assert main([*args[:-1], "0"]) == 1  # a bad flag value is a one-line error, not a stack trace
