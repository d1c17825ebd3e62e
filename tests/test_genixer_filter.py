"""Selection by score band at equal size, top-k and random subsets, the mix with labeled records, and the box
filter: minimum size in pixels or as a fraction, threshold calibration to a recall, a tiny CLIP scorer."""

from __future__ import annotations

import pytest
from PIL import Image

from vlmforge.errors import ConfigError
from vlmforge.synth.genixer.boxfilter import (
    ClipScorer,
    calibrate_threshold,
    crop,
    expression_and_box,
    parse_min_size,
)
from vlmforge.synth.genixer.select import mix, parse_band, select_band, select_random, select_top_k

RECORDS = [{"id": f"s{i}", "score": i / 100} for i in range(100)]


def test_bands_at_equal_size():
    low, mid, high = (select_band(RECORDS, *parse_band(b), n=15, seed=1) for b in ("0:0.5", "0.5:0.7", "0.7:1"))
    assert [len(low), len(mid), len(high)] == [15, 15, 15]
    assert all(0.5 <= r["score"] < 0.7 for r in mid) and all(r["score"] >= 0.7 for r in high)
    assert mid == select_band(RECORDS, 0.5, 0.7, n=15, seed=1)  # seeded
    assert len(select_band(RECORDS, 0.5, 0.7)) == 20 and len(select_band(RECORDS, 0.0, 1.0)) == 100
    rand = select_random(RECORDS, len(mid), seed=1)
    assert len(rand) == 15 and rand != mid
    with pytest.raises(ConfigError, match="only 20 qualify"):
        select_band(RECORDS, 0.5, 0.7, n=21)
    with pytest.raises(ConfigError, match="LOW:HIGH"):
        parse_band("0.5-0.7")


def test_top_k_and_missing_scores():
    assert [r["id"] for r in select_top_k(RECORDS, 3)] == ["s99", "s98", "s97"]
    with pytest.raises(ConfigError, match="judge them first"):
        select_top_k([{"id": "x"}], 1)


def test_mix_keeps_provenance_and_unique_ids():
    labeled = [{"id": "s1", "conversations": []}, {"id": "l2", "provenance": {"source": "world"}}]
    synthetic = [{"id": "s1", "score": 0.6, "provenance": {"stage": "genixer.parse"}}]
    out = mix(synthetic, labeled, "band 0.5:0.7")
    assert [r["id"] for r in out] == ["s1", "l2", "syn-s1"]
    assert out[0]["provenance"] == {"source": "labeled"} and out[1]["provenance"] == {"source": "world"}
    assert out[2]["provenance"] == {"stage": "genixer.parse", "source": "synthetic", "selection": "band 0.5:0.7"}


def test_min_size_in_pixels_or_fraction():
    box = [0.1, 0.1, 0.3, 0.5]  # 0.2 x 0.4 of the image
    assert parse_min_size("50px").too_small(box, (200, 400))  # 40 px wide
    assert not parse_min_size("40px").too_small(box, (200, 400))
    assert parse_min_size("0.25").too_small(box, (10, 10)) and not parse_min_size("0.2").too_small(box, (10, 10))
    with pytest.raises(ConfigError, match="50px"):
        parse_min_size("big")


def test_threshold_calibrated_to_recall():
    positive = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    cal = calibrate_threshold(positive, 0.8, negative=[0.05, 0.15, 0.25, 0.35])
    assert cal["threshold"] == 0.2 and cal["recall"] == 0.8  # the highest threshold keeping 8 of 10
    assert cal["negative_pass_rate"] == 0.5  # 0.25 and 0.35 still pass
    assert calibrate_threshold(positive, 0.75)["threshold"] == 0.2  # 7.5 rounds up to 8 kept
    assert calibrate_threshold(positive, 1.0)["threshold"] == 0.0
    with pytest.raises(ConfigError):
        calibrate_threshold([], 0.9)


def test_expression_and_crop():
    rec = {"task": "rec", "boxes": [[0.0, 0.5, 0.5, 1.0]]}
    rec["conversations"] = [{"from": "human", "value": "<image>\nthe red circle"}, {"from": "gpt", "value": "[..]"}]
    assert expression_and_box(rec) == ("the red circle", [0.0, 0.5, 0.5, 1.0])
    reg = {**rec, "task": "reg"}
    assert expression_and_box(reg)[0] == "[..]" and expression_and_box({**rec, "task": "common_vqa"}) is None
    assert crop(Image.new("RGB", (40, 20)), [0.0, 0.5, 0.5, 1.0]).size == (20, 10)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from vlmforge.testing.tiny import tiny_tokenizer

    root = tmp_path_factory.mktemp("clip")
    tok = tiny_tokenizer()
    text = {"vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    text.update(num_attention_heads=2, max_position_embeddings=64, bos_token_id=None, eos_token_id=tok.eos_token_id)
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision.update(image_size=32, patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(root)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def test_tiny_clip_scorer(tiny_clip):
    scorer = ClipScorer(str(tiny_clip), device="cpu", batch_size=2)
    crops = [Image.new("RGB", (10, 12), c) for c in ("red", "blue", "green")]
    scores = scorer.scores(crops, ["a red circle", "a blue square", "two blue squares"])
    assert len(scores) == 3 and all(-1.0 <= s <= 1.0 for s in scores)
    assert scores == pytest.approx(scorer.scores(crops, ["a red circle", "a blue square", "two blue squares"]))


def _rec(rid: str, expression: str, box: str) -> dict:
    turns = [{"from": "human", "value": f"<image>\n{expression}"}, {"from": "gpt", "value": box}]
    return {"id": rid, "image": f"{rid}.png", "task": "rec", "conversations": turns}


def test_filter_with_a_calibrated_threshold(tmp_path, tiny_clip):
    import json

    from vlmforge.synth.genixer.boxfilter import MinSize
    from vlmforge.synth.genixer.filter_stage import calibrate, filter_records
    from vlmforge.synth.genixer.parse import parse_output, sample_record

    colors = ["red", "blue", "green", "yellow", "purple", "orange"]
    labeled, generated = tmp_path / "labeled.jsonl", tmp_path / "generated.jsonl"
    rows, parsed_rows = [], []
    for i, c in enumerate(colors):
        Image.new("RGB", (40, 40), c).save(tmp_path / f"r{i}.png")
        rec = _rec(f"r{i}", f"the {c} circle", "[0.1,0.1,0.6,0.7]" if i % 2 else "[0.0,0.0,0.05,0.05]")
        rows.append(rec)
        p = parse_output(f"Question: the {c} circle Answer: {rec['conversations'][1]['value']}", "rec")
        parsed_rows.append(sample_record(rec, p, {}))
    labeled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    generated.write_text("".join(json.dumps(r) + "\n" for r in parsed_rows))
    scorer = ClipScorer(str(tiny_clip), device="cpu")
    cal = calibrate(scorer, labeled, 0.5, tmp_path)
    assert cal["n_positive"] == 6 and cal["recall"] >= 0.5 and "negative_pass_rate" in cal
    m = filter_records(generated, tmp_path / "out", min_size=MinSize(pixels=4), scorer=scorer, calibration=cal)
    c = m["counts"]
    assert m["rejections"]["box_too_small"] == 3  # the 2-pixel boxes
    assert c["written"] + c["rejected"] == 6 and c["scored"] == 3 and c["not_scored"] == 0
    assert m["threshold"] == cal["threshold"]
    chunked = filter_records(
        generated, tmp_path / "o2", min_size=MinSize(pixels=4), scorer=scorer, calibration=cal, chunk_size=2
    )
    assert chunked["counts"] == c and chunked["rejections"] == m["rejections"]


def test_siglip_scores_do_not_depend_on_the_batch(tmp_path):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    from vlmforge.testing.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    text = {"vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    text.update(num_attention_heads=2, max_position_embeddings=24, pad_token_id=tok.pad_token_id)
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision.update(image_size=32, patch_size=8)
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(tmp_path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    scorer = ClipScorer(str(tmp_path), device="cpu", batch_size=4)
    crop_ = Image.new("RGB", (12, 12), "red")
    alone = scorer.scores([crop_], ["a red circle"])[0]
    # With a longer text in the batch, the last position of the short one is padding unless padded to max_length.
    together = scorer.scores([crop_, crop_], ["a red circle", "two blue squares and a green triangle at the top"])[0]
    assert together == pytest.approx(alone, abs=1e-5)
