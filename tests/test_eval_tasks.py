"""Task loaders on tiny fixtures written in each benchmark's exact file format, and their bad-input errors."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from eval_helpers import png, shapes_world
from vlmforge.errors import ConfigError, DataError
from vlmforge.eval.tasks import get_task, resolve


def b64png(color: str) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_shapes_tasks_and_chance(tmp_path):
    world = shapes_world(tmp_path / "w", world_json={"stats": {"chance_levels": {"color": 0.125}}})
    data = {"world": str(world)}
    tasks = resolve(["shapes"])
    assert [t.name for t in tasks][:2] == ["shapes_color", "shapes_shape"] and len(tasks) == 7
    color = get_task("shapes_color").load(data)
    assert [s.target for s in color] == ["red", "blue"] and "<image>" not in color[0].prompt
    assert color[0].open_images()[0].size == (8, 8)
    mc = get_task("shapes_mc").load(data)
    assert len(mc) == 8 and len({s.group_id for s in mc}) == 2  # 4 rotations per question
    first = [s for s in mc if s.group_id == "m1"]
    assert [s.target for s in first] == ["A", "D", "C", "B"]  # "circle" moves as the options rotate
    assert all(s.meta["choices"][s.target] == "circle" for s in first)
    assert first[1].prompt.count("A. ") == 1 and "A. square" in first[1].prompt  # options rebuilt, not doubled
    rec = get_task("shapes_rec").load(data)
    assert rec[0].target == [[0.1, 0.1, 0.4, 0.4]]
    assert get_task("shapes_color").chance_level(data) == 0.125  # from world.json
    assert get_task("shapes_count").chance_level(data) == 0.25  # default
    # mc is scored circularly: a guesser must get every rotation right, (1/4) ** 4 with the default 4 options
    assert get_task("shapes_mc").chance_level(data) == 0.25**4
    (world / "world.json").write_text(json.dumps({"chance": {"mc": 1 / 3}}))  # a world with 3 options
    assert get_task("shapes_mc").chance_level(data) == pytest.approx(1 / 27)
    # world.json naming vocabularies instead of chances
    (world / "world.json").write_text(json.dumps({"colors": ["red", "blue", "green", "gray"]}))
    assert get_task("shapes_color").chance_level(data) == 0.25


def test_shapes_missing_image_names_row(tmp_path):
    world = shapes_world(tmp_path / "w")
    (world / "test" / "images" / "0.png").unlink()
    with pytest.raises(DataError, match=r"instruct\.jsonl:1.*image not found"):
        get_task("shapes_color").load({"world": str(world)})


def test_missing_data_key_is_config_error():
    with pytest.raises(ConfigError, match="--data world=PATH"):
        get_task("shapes_color").load({})
    with pytest.raises(ConfigError, match="unknown task"):
        resolve(["shapes_colour"])


def test_mme_three_layouts(tmp_path):
    root = tmp_path / "MME"
    # 1) images/ + questions_answers_YN/
    png(root / "artwork" / "images" / "a1.jpg")
    (root / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (root / "artwork" / "questions_answers_YN" / "a1.txt").write_text(
        "Is it Monet? Please answer yes or no.\tYes\nIs it Dali? Please answer yes or no.\tNo\n"
    )
    # 2) image + same-named txt side by side
    png(root / "existence" / "e1.png")
    (root / "existence" / "e1.txt").write_text("Is there a cat?\tYes\nIs there a dog?\tNo\n")
    # 3) flat <subtask>.txt: image \t question \t answer
    png(root / "count" / "c1.jpg")
    (root / "count.txt").write_text("c1.jpg\tAre there two cats?\tYes\nc1.jpg\tAre there three cats?\tNo\n")
    samples = get_task("mme").load({"mme": str(root)})
    assert len(samples) == 6
    assert {s.meta["subtask"] for s in samples} == {"artwork", "existence", "count"}
    assert [s.target for s in samples if s.meta["subtask"] == "count"] == ["yes", "no"]
    assert len({s.id for s in samples}) == 6
    assert all(s.prompt.endswith("Answer the question using a single word or phrase.") for s in samples)
    (root / "count.txt").write_text("c1.jpg\tAre there two cats?\n")
    with pytest.raises(DataError, match=r"count\.txt:1"):
        get_task("mme").load({"mme": str(root)})


def test_pope_jsonl_and_missing_image(tmp_path):
    png(tmp_path / "img" / "COCO_1.jpg")
    rows = [
        {"question_id": 1, "image": "COCO_1.jpg", "text": "Is there a dog in the image?", "label": "yes"},
        {"question_id": 2, "image": "COCO_1.jpg", "text": "Is there a cat in the image?", "label": "no"},
    ]
    for split in ("random", "adversarial"):
        (tmp_path / f"coco_pope_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"pope": str(tmp_path), "pope_images": str(tmp_path / "img")}
    samples = get_task("pope").load(data)
    assert len(samples) == 4 and {s.meta["split"] for s in samples} == {"random", "adversarial"}
    rows[1]["image"] = "COCO_404.jpg"
    (tmp_path / "coco_pope_random.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"coco_pope_random\.json:2.*COCO_404"):
        get_task("pope").load(data)


def test_vlmevalkit_tsv_mmbench_and_bad_row(tmp_path):
    header = "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage"
    rows = [
        f"0\tWhat color?\tnan\tred\tblue\tgreen\tnan\tB\tcolor\t{b64png('blue')}",
        "1\tWhat shape?\tA toy.\tcube\tball\tnan\tnan\tA\tshape\t0",
    ]  # image "0" reuses row 0's image
    tsv = tmp_path / "MMBench_DEV_EN.tsv"
    tsv.write_text("\n".join([header, *rows]) + "\n")
    samples = get_task("mmbench_tsv").load({"mmbench_tsv": str(tsv)})
    # no circular copies in the file: each question is asked once, as VLMEvalKit asks it (test_eval_circular.py)
    assert len(samples) == 2 and [s.group_id for s in samples] == ["0", "1"]
    assert samples[0].open_images()[0].getpixel((0, 0)) == (0, 0, 255)
    assert samples[1].images == samples[0].images and samples[1].prompt.startswith("A toy.\nWhat shape?")
    assert [s.target for s in samples] == ["B", "A"] and samples[0].meta["choices"] == {"A": "red", "B": "blue",
                                                                                        "C": "green"}  # fmt: skip
    tsv.write_text("\n".join([header, rows[0], "2\tbroken row\tB"]) + "\n")
    with pytest.raises(DataError, match=r"MMBench_DEV_EN\.tsv:3: malformed TSV row"):
        get_task("mmbench_tsv").load({"mmbench_tsv": str(tsv)})


def test_vlmevalkit_tsv_mme_pairs_by_image(tmp_path):
    header = "index\tquestion\tanswer\tcategory\timage\timage_path"
    tsv = tmp_path / "MME.tsv"
    tsv.write_text("\n".join([header, f"0\tIs it red?\tYes\tcolor\t{b64png('red')}\tcolor/1.jpg",
                              "1\tIs it blue?\tNo\tcolor\t0\tcolor/1.jpg"]) + "\n")  # fmt: skip
    samples = get_task("mme_tsv").load({"mme_tsv": str(tsv)})
    assert [s.meta for s in samples] == [{"subtask": "color", "image": "color/1.jpg"}] * 2


def test_gqa_vqav2_scienceqa_llava_jsonl(tmp_path):
    png(tmp_path / "images" / "n1.jpg")
    (tmp_path / "gqa.json").write_text(
        json.dumps(
            {"q1": {"imageId": "n1", "question": "Left or right?", "answer": "left", "types": {"structural": "choose"}}}
        )
    )
    gqa = get_task("gqa").load({"gqa": str(tmp_path / "gqa.json")})
    assert gqa[0].target == "left" and gqa[0].meta["type"] == "choose"

    png(tmp_path / "coco" / "COCO_val2014_000000000042.jpg")
    (tmp_path / "q.json").write_text(json.dumps({"questions": [{"question_id": 7, "image_id": 42, "question": "?"}]}))
    (tmp_path / "a.json").write_text(
        json.dumps({"annotations": [{"question_id": 7, "answer_type": "number", "answers": [{"answer": "2"}] * 10}]})
    )
    vqa = get_task("vqav2").load(
        {
            "vqav2_questions": str(tmp_path / "q.json"),
            "vqav2_annotations": str(tmp_path / "a.json"),
            "vqav2_images": str(tmp_path / "coco"),
        }
    )
    assert vqa[0].target == ["2"] * 10 and vqa[0].images[0].endswith("000000000042.jpg")

    sqa = tmp_path / "sqa"
    png(sqa / "images" / "test" / "5" / "image.png")
    (sqa / "problems.json").write_text(
        json.dumps(
            {
                "5": {
                    "question": "Which is a mammal?",
                    "choices": ["frog", "cow"],
                    "answer": 1,
                    "hint": "Animals.",
                    "image": "image.png",
                    "subject": "natural science",
                },
                "6": {"question": "No image here", "choices": ["a", "b"], "answer": 0, "hint": "", "image": None},
            }
        )
    )
    (sqa / "pid_splits.json").write_text(json.dumps({"test": ["5", "6"]}))
    s = get_task("scienceqa_img").load({"scienceqa": str(sqa / "problems.json")})
    assert len(s) == 1 and s[0].target == "B" and s[0].prompt.startswith("Context: Animals.\nWhich is a mammal?")

    (tmp_path / "qs.jsonl").write_text(
        json.dumps({"question_id": 3, "image": "images/n1.jpg", "text": "Color?"}) + "\n"
    )
    (tmp_path / "ans.jsonl").write_text(json.dumps({"question_id": 3, "answer": "red"}) + "\n")
    lq = get_task("llava_qa").load(
        {"llava_questions": str(tmp_path / "qs.jsonl"), "llava_answers": str(tmp_path / "ans.jsonl")}
    )
    assert lq[0].target == "red"

    recs = [
        {
            "id": "u1",
            "image": "images/n1.jpg",
            "task": "color",
            "answer": "red",
            "conversations": [{"from": "human", "value": "<image>\nColor?"}],
        },
        {
            "id": "u2",
            "task": "pick",
            "answer": "dog",
            "choices": ["cat", "dog"],
            "conversations": [{"from": "human", "value": "Which barks?"}],
        },
    ]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + "{not json\n")
    with pytest.raises(DataError, match=r"mine\.jsonl:3: malformed JSON"):
        get_task("jsonl").load({"jsonl": str(tmp_path / "mine.jsonl")})
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    u = get_task("jsonl").load({"jsonl": str(tmp_path / "mine.jsonl")})
    assert u[1].target == "B" and u[1].meta["choices"] == {"A": "cat", "B": "dog"} and u[1].images == []
    assert [(s.group_id, s.target) for s in u[1:]] == [("u2", "B"), ("u2", "A")]  # rotated: the file has no copies
