"""Every kind of bad input: a clear DataError naming the file and line/record, or, with on_error="skip", a skip
that is counted by reason."""

import json

import pytest
from PIL import Image
from transformers import AutoProcessor

from vlmforge.data.chat import encode_conversation
from vlmforge.data.collate import PaddingCollator
from vlmforge.data.dataset import ConversationDataset
from vlmforge.data.images import load_image
from vlmforge.data.records import Rejections, load_records
from vlmforge.data.validate import validate_record
from vlmforge.errors import DataError

GOOD = {
    "id": "good",
    "image": "ok.png",
    "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
}
TEXT_ONLY = {
    "id": "text",
    "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "hello"}],
}
# id -> (record, expected code); each differs from GOOD in one way.
BAD = {
    "missing": (dict(GOOD, id="missing", image="nope.png"), "missing_image"),
    "count": (dict(GOOD, id="count", image=["ok.png", "ok.png"]), "image_count_mismatch"),
    "empty": ({"id": "empty", "conversations": []}, "bad_conversation"),
    "order": (
        dict(GOOD, id="order", conversations=[GOOD["conversations"][1], GOOD["conversations"][0]]),
        "bad_conversation",
    ),
    "twice": (
        dict(
            TEXT_ONLY,
            id="twice",
            conversations=TEXT_ONLY["conversations"][:1] * 2 + TEXT_ONLY["conversations"][1:],
        ),
        "bad_conversation",
    ),
}
LONG = dict(
    TEXT_ONLY,
    id="long",
    conversations=[{"from": "human", "value": "red " * 200}, {"from": "gpt", "value": "red"}],
)


@pytest.fixture(scope="module")
def processor(tiny_llava):
    return AutoProcessor.from_pretrained(tiny_llava)


@pytest.fixture()
def folder(tmp_path):
    Image.new("RGB", (40, 30), (0, 255, 0)).save(tmp_path / "ok.png")
    (tmp_path / "garbage.png").write_bytes(b"this is not an image at all")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    return tmp_path


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(TEXT_ONLY) + "\n" + '{"id": "x", "conversations": [\n' + json.dumps(TEXT_ONLY) + "\n")
    with pytest.raises(DataError) as err:
        load_records(path)
    assert err.value.where == f"{path}:2" and err.value.code == "malformed_json"
    assert f"{path}:2" in str(err.value)
    rejections = Rejections()
    assert len(load_records(path, on_error="skip", rejections=rejections)) == 2
    assert rejections.as_dict()["by_reason"] == {"malformed_json": 1}


@pytest.mark.parametrize(
    ("line", "column_of"),
    [
        ('{"id": "x", "n": 1', lambda line: len(line) + 1),  # cut short: the error is just past its end
        ('{"id": "x", "n": }', lambda line: line.index("}") + 1),
        ('{"id": "x"} trailing', lambda line: line.index("trailing") + 1),
    ],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_malformed_json_line_names_its_column(tmp_path, line, column_of, newline):
    path = tmp_path / "r.jsonl"
    path.write_bytes((json.dumps(TEXT_ONLY) + newline + line + newline).encode())
    with pytest.raises(DataError) as err:
        load_records(path)
    assert err.value.where == f"{path}:2" and f"(column {column_of(line)})" in err.value.reason


@pytest.mark.parametrize("name", sorted(BAD))
def test_invalid_record_is_named(folder, name):
    record, code = BAD[name]
    with pytest.raises(DataError) as err:
        validate_record(record, f"f.jsonl:id={name}", folder)
    assert err.value.code == code and err.value.where == f"f.jsonl:id={name}"


def test_text_only_records_are_valid(folder):
    assert validate_record(TEXT_ONLY, "f:1", folder) == TEXT_ONLY


@pytest.mark.parametrize(
    ("file", "code"),
    [("nope.png", "missing_image"), ("garbage.png", "corrupt_image"), ("truncated.png", "corrupt_image")],
)
def test_unloadable_images_name_the_record(folder, file, code):
    with pytest.raises(DataError) as err:
        load_image(folder / file, "f.jsonl:7")
    assert err.value.code == code and err.value.where == "f.jsonl:7" and file in err.value.reason


def test_pixel_cap_stops_decompression_bombs(folder):
    assert load_image(folder / "ok.png", "f:1").size == (40, 30)
    with pytest.raises(DataError) as err:
        load_image(folder / "ok.png", "f:1", max_pixels=1000)
    assert err.value.code == "image_too_large"


def test_too_long_sample_is_refused_not_cut(processor):
    with pytest.raises(DataError) as err:
        encode_conversation(LONG, processor, max_length=64, where="f.jsonl:9")
    assert err.value.code == "too_long" and err.value.where == "f.jsonl:9"


def test_skip_counts_every_bad_input_by_reason(folder, processor):
    lines = [json.dumps(r) for r in [GOOD, TEXT_ONLY, dict(GOOD, id="corrupt", image="garbage.png"), LONG]]
    lines += [json.dumps(record) for record, _ in BAD.values()] + ['{"id": broken']
    path = folder / "records.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError):
        ConversationDataset(path, processor)
    dataset = ConversationDataset(path, processor, on_error="skip", max_length=64)
    expected = {"malformed_json": 1, "missing_image": 1, "image_count_mismatch": 1, "bad_conversation": 3}
    assert dataset.rejections.as_dict()["by_reason"] == expected
    assert len(dataset.compute_lengths()) == 3  # GOOD, TEXT_ONLY, corrupt (found only when decoded)
    assert dataset.rejections.counts["too_long"] == 1
    items = [dataset[i] for i in range(len(dataset))]
    assert [item is None for item in items] == [False, False, True]
    assert dataset.rejections.counts["corrupt_image"] == 1 and dataset.rejections.total == 8
    batch = PaddingCollator(processor.tokenizer.pad_token_id)(items)
    assert batch["input_ids"].shape[0] == 2 and batch["pixel_values"].shape[0] == 1
