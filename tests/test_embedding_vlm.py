"""The embedding-input VLM (Unicorn): model, processor, generation, save/load, packing, calibration, runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from vlmforge.data.packing import PackingCollator
from vlmforge.models.embedding_vlm import EmbeddingVLMForConditionalGeneration, assemble_embedding_vlm
from vlmforge.models.embedding_vlm.calibrate import calibrate_checkpoint
from vlmforge.runtime import Conversation, SamplingParams, VisionLanguageModel
from vlmforge.testing.tiny import save_tiny_lm

# Deprecated transformers arguments warn with FutureWarning: passing one by its old name is a bug here.
pytestmark = pytest.mark.filterwarnings("error::FutureWarning")

EMBED_DIM, K = 24, 4
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 20)}


def save_tiny_encoder(out: Path) -> Path:
    """A tiny CLIP vision tower with a projection to EMBED_DIM (the stand-in for the paired image encoder)."""
    config = CLIPVisionConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=EMBED_DIM,
    )
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(config).save_pretrained(out)
    side = {"height": 32, "width": 32}
    CLIPImageProcessor(size=side, crop_size=side, do_center_crop=False).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedding_parts")
    return save_tiny_encoder(root / "encoder"), save_tiny_lm(root / "lm")


@pytest.fixture(scope="module")
def built(parts):
    torch.manual_seed(0)
    model, processor = assemble_embedding_vlm(str(parts[1]), str(parts[0]), num_visual_tokens=K)
    return model.eval(), processor


@pytest.fixture(scope="module")
def saved(built, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedding_vlm") / "model"
    model, processor = built
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def image(colour: str, size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, COLOURS[colour])


def prompt(processor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_processor_expands_image_token_to_k_tokens(built):
    model, processor = built
    text = prompt(processor, "what colour?")
    from_image = processor(text=[text], images=[image("red")], return_tensors="pt")
    from_embeds = processor(text=[text], image_embeds=torch.randn(1, EMBED_DIM), return_tensors="pt")
    for inputs in (from_image, from_embeds):
        assert int((inputs["input_ids"] == model.config.image_token_index).sum()) == K
    assert torch.equal(from_image["input_ids"], from_embeds["input_ids"])
    assert from_embeds["image_embeds"].shape == (1, EMBED_DIM)
    with pytest.raises(ValueError, match="image embedding"):
        processor(text=[text], image_embeds=torch.randn(2, EMBED_DIM))


def test_pixel_path_equals_embedding_path_and_images_matter(built):
    model, processor = built
    text = prompt(processor, "what colour?")
    pixels = processor(text=[text], images=[image("red")], return_tensors="pt")
    with torch.no_grad():
        by_pixels = model(**pixels).logits
        own = model.encode_images(pixels["pixel_values"])  # the encoder's own normalised, centred embedding
        by_embeds = model(
            input_ids=pixels["input_ids"], attention_mask=pixels["attention_mask"], image_embeds=own
        ).logits
        other = model(input_ids=pixels["input_ids"], image_embeds=F.normalize(torch.randn(1, EMBED_DIM), dim=-1)).logits
    assert torch.allclose(own.norm(dim=-1), torch.ones(1), atol=1e-5)
    assert torch.allclose(by_pixels, by_embeds, atol=1e-6)
    # The image fills the k image tokens: positions before them do not change, positions after them do.
    first = int((pixels["input_ids"][0] == model.config.image_token_index).nonzero()[0])
    assert torch.allclose(by_pixels[0, :first], other[0, :first], atol=1e-6)
    assert not torch.allclose(by_pixels[0, first + K :], other[0, first + K :], atol=1e-4)


def test_projectors_make_k_tokens(parts):
    for projector, distinct in (("mlp2x_gelu", True), ("repeat", False)):
        model, _ = assemble_embedding_vlm(str(parts[1]), str(parts[0]), num_visual_tokens=K, projector=projector)
        tokens = model.image_tokens(torch.randn(3, EMBED_DIM))
        assert tokens.shape == (3, K, model.config.text_config.hidden_size)
        assert (not torch.allclose(tokens[:, 0], tokens[:, 1])) == distinct


def test_generate_batched_left_padding_equals_one_at_a_time(built):
    model, processor = built
    vlm = VisionLanguageModel(model, processor)
    conversations = [
        Conversation.single_turn("what colour is the shape?", [image("red")]),
        Conversation.single_turn("colour?", [image("blue", (20, 50))]),
        Conversation.single_turn("say something about circles and squares"),  # text only, in the same batch
    ]
    params = SamplingParams(max_new_tokens=6)
    batched = vlm.generate(conversations, params)
    single = [vlm.generate([c], params)[0] for c in conversations]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.completion_tokens > 0 for c in batched)


def test_generate_with_image_embeds_uses_the_cache(built):
    model, processor = built
    text = prompt(processor, "what colour?")
    inputs = processor(text=[text], image_embeds=F.normalize(torch.randn(1, EMBED_DIM), dim=-1), return_tensors="pt")
    cached = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    uncached = model.generate(**inputs, max_new_tokens=5, do_sample=False, use_cache=False)
    assert cached.shape[1] == inputs["input_ids"].shape[1] + 5
    assert torch.equal(cached, uncached)


def test_save_and_auto_load_give_the_same_outputs(built, saved):
    model, processor = built
    loaded = AutoModelForImageTextToText.from_pretrained(saved).eval()
    loaded_processor = AutoProcessor.from_pretrained(saved)
    assert isinstance(loaded, EmbeddingVLMForConditionalGeneration)
    assert loaded_processor.num_visual_tokens == K
    text = prompt(processor, "what colour?")
    a = processor(text=[text], images=[image("green")], return_tensors="pt")
    b = loaded_processor(text=[text], images=[image("green")], return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"])
    with torch.no_grad():
        assert torch.allclose(model(**a).logits, loaded(**b).logits, atol=1e-6)


def test_runtime_loads_the_checkpoint_and_answers_about_a_real_image(saved):
    vlm = VisionLanguageModel.from_pretrained(saved, device="cpu")
    out = vlm.generate([Conversation.single_turn("what colour?", [image("yellow")])], SamplingParams(max_new_tokens=4))
    assert out[0].prompt_tokens > K and out[0].finish_reason in ("stop", "length")


def test_the_runtime_counts_its_prompts_as_the_processor_makes_them(saved):
    vlm = VisionLanguageModel.from_pretrained(saved)
    for conversation in (
        Conversation.single_turn("What colour is it?", [image("red"), image("blue")]),
        Conversation.single_turn("red " * 20),
    ):
        assert vlm.prompt_length(conversation) == vlm.prompt_tokens([conversation])[0]
    assert vlm.context == 1024


def test_packed_rows_give_each_sample_its_own_logits(built):
    model, processor = built
    tokenizer = processor.tokenizer
    samples = []
    for question in ("what colour?", "how many shapes are there in the picture?"):
        inputs = processor(
            text=[prompt(processor, question)], image_embeds=torch.randn(1, EMBED_DIM), return_tensors="pt"
        )
        ids = inputs["input_ids"][0]
        samples.append({"input_ids": ids, "labels": ids.clone(), "image_embeds": inputs["image_embeds"]})
    batch = PackingCollator(tokenizer.pad_token_id)([samples])
    assert batch["image_embeds"].shape == (2, EMBED_DIM) and "attention_mask" not in batch
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            image_embeds=batch["image_embeds"],
            use_cache=False,
        ).logits[0]
        start = 0
        for sample in samples:
            n = len(sample["input_ids"])
            alone = model(input_ids=sample["input_ids"][None], image_embeds=sample["image_embeds"]).logits[0]
            assert torch.allclose(packed[start : start + n], alone, atol=1e-5)
            start += n


def test_calibration_stores_the_image_mean(saved, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for colour in COLOURS:
        image(colour).save(folder / f"{colour}.png")
    out = tmp_path / "calibrated"
    summary = calibrate_checkpoint(saved, folder, n=3, out_dir=out)
    assert summary["images"] == 3
    before = AutoModelForImageTextToText.from_pretrained(saved).eval()
    after = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert float(before.image_mean.abs().sum()) == 0 and after.config.image_mean_count == 3
    processor = AutoProcessor.from_pretrained(out)
    pixels = processor.image_processor([image(c) for c in sorted(COLOURS)[:3]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        raw = F.normalize(after.vision_tower(pixel_values=pixels).image_embeds, dim=-1)
        assert torch.allclose(after.image_mean, raw.mean(0), atol=1e-5)  # sorted names: blue, green, red
        assert torch.allclose(after.encode_images(pixels), F.normalize(raw - raw.mean(0), dim=-1), atol=1e-5)
        assert not torch.allclose(after.encode_images(pixels), before.encode_images(pixels), atol=1e-3)


def test_calibrate_command(saved, tmp_path, capsys):
    import argparse
    import json

    from vlmforge.synth.unicorn.calibrate_command import add_calibrate_parser

    image("red").save(tmp_path / "red.png")
    parser = argparse.ArgumentParser()
    add_calibrate_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["calibrate", "--model", str(saved), "--images", str(tmp_path), "--out", str(tmp_path / "m")]
    )
    assert args.handler(args) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1
    assert AutoModelForImageTextToText.from_pretrained(tmp_path / "m").config.image_mean_count == 1


def _colour_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for colour in COLOURS:
        image(colour).save(root / f"{colour}.png")
    return root


def test_covariance_calibration_is_saved_used_and_dropped_by_a_mean_only_recalibration(saved, tmp_path):
    from vlmforge.data.embedding_store import EmbeddingStore
    from vlmforge.models.embedding_vlm.alignment import align, covariance_alignment, shrunk_covariance

    folder = _colour_folder(tmp_path / "images")
    texts = F.normalize(torch.randn(50, EMBED_DIM, generator=torch.Generator().manual_seed(0)), dim=-1)
    store = EmbeddingStore.write(tmp_path / "store", [f"t{i}" for i in range(50)], texts)
    summary = calibrate_checkpoint(saved, folder, n=4, out_dir=tmp_path / "cov", text_store=store, shrinkage=0.5)
    assert summary["alignment"] == "covariance" and summary["shrinkage"] == 0.5
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "cov").eval()  # a fresh load keeps the matrix
    assert model.config.image_alignment == "covariance" and model.config.image_alignment_shrinkage == 0.5
    processor = AutoProcessor.from_pretrained(tmp_path / "cov")
    pixels = processor.image_processor([image(c) for c in sorted(COLOURS)], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        raw = F.normalize(model.vision_tower(pixel_values=pixels).image_embeds, dim=-1)
        stored = EmbeddingStore.open(store).get_many([f"t{i}" for i in range(50)]).float()  # float16 on disk
        matrix = covariance_alignment(shrunk_covariance(raw, 0.5), shrunk_covariance(stored, 0.5))
        assert torch.allclose(model.image_align, matrix, atol=1e-4)
        assert torch.allclose(model.encode_images(pixels), align(raw, raw.mean(0), matrix), atol=1e-4)
        centred_only = align(raw, raw.mean(0))
        assert not torch.allclose(model.encode_images(pixels), centred_only, atol=1e-2)
    # Calibrating again without a store goes back to the paper's centring and saves no matrix.
    calibrate_checkpoint(tmp_path / "cov", folder, n=4, out_dir=tmp_path / "mean")
    again = AutoModelForImageTextToText.from_pretrained(tmp_path / "mean").eval()
    assert again.config.image_alignment == "mean" and not hasattr(again, "image_align")
    with torch.no_grad():
        assert torch.allclose(again.encode_images(pixels), centred_only, atol=1e-5)


def test_covariance_calibration_rejects_a_store_of_another_width_and_a_bad_shrinkage(saved, tmp_path):
    import argparse

    from vlmforge.data.embedding_store import EmbeddingStore
    from vlmforge.errors import ConfigError
    from vlmforge.synth.unicorn.calibrate_command import add_calibrate_parser

    folder = _colour_folder(tmp_path / "images")
    store = EmbeddingStore.write(tmp_path / "store", ["a", "b", "c"], torch.randn(3, EMBED_DIM + 1))
    with pytest.raises(ConfigError, match=f"{EMBED_DIM + 1}-d vectors"):
        calibrate_checkpoint(saved, folder, n=4, out_dir=tmp_path / "x", text_store=store)
    parser = argparse.ArgumentParser()
    add_calibrate_parser(parser.add_subparsers())
    args = parser.parse_args(["calibrate", "--model", str(saved), "--images", str(folder), "--shrinkage", "2",
                              "--match-covariance", str(store)])  # fmt: skip
    with pytest.raises(ConfigError, match="--shrinkage must be between 0 and 1"):
        args.handler(args)
