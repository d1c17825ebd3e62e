import json

import pytest

from vlmforge.data.records import Rejections, load_records, read_records, save_records
from vlmforge.errors import DataError

RECORDS = [
    {
        "id": "a",
        "image": "a.png",
        "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
        "task": "qa",
    },
    {
        "id": "b",
        "conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}],
        "caption": "text only",
        "score": 0.5,
    },
]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_save_then_load_round_trips(tmp_path, suffix):
    path = save_records(RECORDS, tmp_path / f"r{suffix}")
    assert load_records(path) == RECORDS


def test_json_list_and_parquet_folder(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(RECORDS))
    assert load_records(tmp_path / "r.json") == RECORDS
    folder = tmp_path / "shards"
    save_records(RECORDS[:1], folder / "part-0.parquet")
    save_records(RECORDS[1:], folder / "part-1.parquet")
    assert load_records(folder) == RECORDS


def test_parquet_with_mixed_image_fields_becomes_lists(tmp_path):
    records = [dict(RECORDS[0], image=["a.png", "b.png"]), RECORDS[0], RECORDS[1]]
    loaded = load_records(save_records(records, tmp_path / "m.parquet"))
    assert [r.get("image") for r in loaded] == [["a.png", "b.png"], ["a.png"], None]


def test_locations_name_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n" + json.dumps(RECORDS[1]) + "\n")
    assert [where for where, _ in read_records(path)] == [f"{path}:1", f"{path}:3"]


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "r.csv").write_text("x")
    with pytest.raises(DataError, match="unknown record file type"):
        load_records(tmp_path / "r.csv")
    (tmp_path / "d.json").write_text('{"id": 1}')
    with pytest.raises(DataError, match="must hold a list"):
        load_records(tmp_path / "d.json")
    (tmp_path / "bad.json").write_text('[\n{"id": 1},\n{"id": \n')
    with pytest.raises(DataError) as err:
        load_records(tmp_path / "bad.json", on_error="skip")  # a broken .json list cannot be skipped around
    assert err.value.code == "malformed_json" and err.value.where.startswith(f"{tmp_path / 'bad.json'}:")


def test_rejections_count_and_merge():
    first, second = Rejections(), Rejections()
    for i in range(7):
        first.add("missing_image", f"f:{i}")
    second.add("too_long", "g:1")
    second.add("missing_image", "g:2")
    first.update(second)
    summary = first.as_dict()
    assert summary["total"] == 9 == first.total
    assert summary["by_reason"] == {"missing_image": 8, "too_long": 1}
    assert len(summary["examples"]["missing_image"]) == 5 and summary["examples"]["too_long"] == ["g:1"]
    json.dumps(summary)  # manifest-ready
