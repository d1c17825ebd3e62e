"""A user's own records (the `jsonl` task): matching rules, derived chance, breakdowns, the shared validator, and
the --data keys check that every task gets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval_helpers import png
from vlmforge.cli import main
from vlmforge.data.validate import validate_record
from vlmforge.errors import ConfigError, DataError
from vlmforge.eval import evaluate, match
from vlmforge.eval.tasks import TASKS, check_data_keys, get_task, resolve


def _record(rid, question, answer, task=None, image="a.png", **extra) -> dict:
    turns = [{"from": "human", "value": f"<image>\n{question}" if image else question}]
    return {"id": rid, "conversations": turns, "answer": answer, **({"task": task} if task else {}),
            **({"image": image} if image else {}), **extra}  # fmt: skip


RECORDS = [
    _record("c1", "Colour of the circle?", "red", "color", source="web"),
    _record("c2", "Colour of the square?", "blue", "color", source="book"),
    _record("c3", "Colour of the star?", "red", "color", source="web"),
    _record("p1", "Where is the circle?", "top left", "position", source="web"),
    _record("p2", "Where is the square?", "the center", "position", source="book"),
    _record("m1", "Which one barks?", "B", "pick", choices=["cat", "dog", "cow"], source="web"),
    _record("b1", "Box of the circle?", "[0.1, 0.1, 0.5, 0.5]", "box", source="book"),
    _record("t1", "Which letter is shown?", "T", "letter", image=None),
]


@pytest.fixture
def records(tmp_path):
    png(tmp_path / "a.png")
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


class Scripted:
    """A fake generator: the answer for each question from a table, and how many questions it was asked."""

    def __init__(self, answers: dict[str, str]):
        self.answers, self.calls = answers, 0

    def __call__(self, requests):
        self.calls += len(requests)
        return [next(a for q, a in self.answers.items() if r.prompt.startswith(q)) for r in requests]


def _by_id(samples):
    return {s.id: s for s in samples}


def test_auto_rule_follows_the_answer_set(records):
    samples = _by_id(get_task("jsonl").load({"jsonl": str(records)}))
    rules = {s.group_id: s.meta["match"] for s in samples.values()}
    # one-word colours and the letter T: exact; phrases: vqa; options: letter; a box: iou
    assert rules == {"c1": "exact", "c2": "exact", "c3": "exact", "p1": "vqa", "p2": "vqa", "m1": "letter",
                     "b1": "iou", "t1": "exact"}  # fmt: skip
    # the file holds no circular copies, so a question with options is asked once per rotation of them
    assert [sid for sid in samples if sid.startswith("m1")] == ["m1#r0", "m1#r1", "m1#r2"]
    assert samples["t1"].images == [] and samples["c1"].images == [str(records.parent / "a.png")]
    assert samples["m1#r0"].target == "B" and samples["m1#r0"].meta["choices"] == {"A": "cat", "B": "dog", "C": "cow"}


@pytest.mark.parametrize(
    ("rule", "target", "right", "wrong"),
    [
        ("exact", "T", ["T", " T\n"], ["t", "T.", ""]),
        ("nocase", "T", ["t", "T"], ["T.", "", "tt"]),
        ("vqa", "A", ["A", "a", "A."], ["", "An", "The", "the a"]),  # "A" is never normalised away
        ("vqa", "the red one", ["Red one.", "red one"], ["red", ""]),
        ("vqa", ["two", "2 cats"], ["2", "2 cats"], ["3", ""]),
        ("vqa", "?", ["?"], ["", "!"]),
        ("iou", [0.1, 0.1, 0.5, 0.5], ["[0.1, 0.1, 0.5, 0.5]", "it is (0.12,0.1,0.5,0.52)"], ["[0.6,0.6,0.9,0.9]", ""]),
    ],
)
def test_rules(rule, target, right, wrong):
    meta = match.sample_meta(rule, target)
    assert [match.judge(match.parse(p, meta), target, meta) for p in right] == [1.0] * len(right)
    assert [match.judge(match.parse(p, meta), target, meta) for p in wrong] == [0.0] * len(wrong)


def test_letter_rule_reads_the_option_letter():
    meta = {**match.sample_meta("letter", "B"), "choices": {"A": "cat", "B": "dog"}}
    judged = {p: match.judge(match.parse(p, meta), "B", meta) for p in ("B", "(B) dog", "dog", "A", "cat or dog")}
    assert judged == {"B": 1.0, "(B) dog": 1.0, "dog": 1.0, "A": 0.0, "cat or dog": 0.0}


@settings(max_examples=200, deadline=None)
@given(target=st.text(min_size=1, max_size=12).filter(str.strip), rule=st.sampled_from(["exact", "nocase", "vqa"]))
def test_text_rules_accept_the_target_and_never_an_empty_answer(target, rule):
    meta = match.sample_meta(rule, target)
    assert match.judge(match.parse(target, meta), target, meta) == 1.0
    assert match.judge(match.parse("", meta), target, meta) == 0.0


def test_chosen_rules_and_their_errors(records):
    data = {"jsonl": str(records), "jsonl_match": "nocase,position:exact,box:iou"}
    rules = {s.group_id: s.meta["match"] for s in get_task("jsonl").load(data)}
    assert rules["c1"] == "nocase" and rules["p1"] == "exact" and rules["b1"] == "iou" and rules["m1"] == "nocase"
    with pytest.raises(ConfigError, match=r"unknown rule 'fuzzy'.*exact, nocase, vqa, letter, iou"):
        get_task("jsonl").load({**data, "jsonl_match": "fuzzy"})
    with pytest.raises(ConfigError, match=r"no record has task 'colour'; tasks: box, color, letter, pick, position"):
        get_task("jsonl").load({**data, "jsonl_match": "colour:exact"})
    with pytest.raises(DataError, match=r"mine\.jsonl:1: scoring 'iou' needs a box answer"):
        get_task("jsonl").load({**data, "jsonl_match": "iou"})
    with pytest.raises(DataError, match=r"mine\.jsonl:1: scoring 'letter' needs the record's `choices`"):
        get_task("jsonl").load({**data, "jsonl_match": "color:letter"})


def _answers(wrong_source: str | None = None) -> dict[str, str]:
    table = {"Colour of the circle": "red", "Colour of the square": "blue", "Colour of the star": "red",
             "Where is the circle": "Top left.", "Where is the square": "the center", "Which one barks": "dog",
             "Box of the circle": "[0.1, 0.1, 0.5, 0.5]", "Which letter": "T"}  # fmt: skip
    if wrong_source:
        for r in RECORDS:
            if r.get("source") == wrong_source:
                question = r["conversations"][0]["value"].replace("<image>\n", "")
                table[question.rstrip("?")] = "nothing"
    return table


def test_chance_derived_given_or_none_and_group_by(records, tmp_path):
    data = {"jsonl": str(records)}
    res = evaluate(Scripted(_answers(wrong_source="book")), ["jsonl"], tmp_path / "out", data=data,
                   group_by=["source"], progress=False)  # fmt: skip
    info = res["tasks"]["jsonl"]
    # per record: colours {red, blue} -> 1/2; positions {top left, center} -> 1/2; 3 options -> (1/3)^3; one letter -> 1;
    # the box has no chance level, so the task has none unless it is given
    assert info["chance"] is None
    metrics = info["metrics"]
    assert metrics["source=web/accuracy"]["value"] == 1.0 and metrics["source=web/accuracy"]["n"] == 4
    assert metrics["source=book/accuracy"]["value"] == 0.0 and metrics["source=book/accuracy"]["n"] == 3
    assert metrics["color/accuracy"]["value"] == pytest.approx(2 / 3) and metrics["letter/accuracy"]["value"] == 1.0
    assert "source=web" in (tmp_path / "out" / "report.md").read_text()

    without_box = tmp_path / "nobox.jsonl"
    without_box.write_text("".join(json.dumps(r) + "\n" for r in RECORDS if r["id"] != "b1"))
    nobox = {"jsonl": str(without_box), "jsonl_images": str(records.parent)}
    expected = (3 * (1 / 2) + 2 * (1 / 2) + (1 / 3) ** 3 + 1) / 7  # three options, asked in all three orders
    assert get_task("jsonl").chance_level(nobox, get_task("jsonl").load(nobox)) == pytest.approx(expected)
    given_chance = {**nobox, "jsonl_chance": "0.3"}
    assert get_task("jsonl").chance_level(given_chance, get_task("jsonl").load(given_chance)) == 0.3
    no_chance = {**nobox, "jsonl_chance": "none"}
    assert get_task("jsonl").chance_level(no_chance, get_task("jsonl").load(no_chance)) is None
    with pytest.raises(ConfigError, match="jsonl_chance must be a number in"):
        get_task("jsonl").load({**nobox, "jsonl_chance": "1.5"})
    with pytest.raises(ConfigError, match=r"--group-by origin: no sample of task\(s\) jsonl has that field.*source"):
        evaluate(Scripted(_answers()), ["jsonl"], tmp_path / "o2", data=data, group_by=["origin"], progress=False)


def test_another_rule_rescores_the_saved_predictions(records, tmp_path):
    data = {"jsonl": str(records)}
    first = evaluate(Scripted(_answers()), ["jsonl"], tmp_path / "out", data=data, progress=False)
    again = Scripted(_answers())
    second = evaluate(again, ["jsonl"], tmp_path / "out", data={**data, "jsonl_match": "exact"}, progress=False)
    assert again.calls == 0  # the rule changes the scoring, not the questions
    # "Top left." is right under the vqa rule that auto picks for positions, wrong under exact
    assert first["tasks"]["jsonl"]["metrics"]["position/accuracy"]["value"] == 1.0
    assert second["tasks"]["jsonl"]["metrics"]["position/accuracy"]["value"] == 0.5


def test_eval_and_train_refuse_the_same_record_alike(records):
    bad = _record("x1", "<image>\nCompare the two.", "same", "color")  # two markers, one image
    records.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as in_eval:
        get_task("jsonl").load({"jsonl": str(records)})
    trained = {**bad, "conversations": [*bad["conversations"], {"from": "gpt", "value": "same"}]}
    with pytest.raises(DataError) as in_train:
        validate_record(trained, f"{records}:2", records.parent)
    assert in_eval.value.code == in_train.value.code == "image_count_mismatch"
    assert str(in_eval.value) == str(in_train.value)
    records.write_text(json.dumps(_record("x2", "Colour?", "red", image="missing.png")) + "\n")
    with pytest.raises(DataError, match=r"mine\.jsonl:1: image file .*missing\.png does not exist"):
        get_task("jsonl").load({"jsonl": str(records)})


def test_answer_falls_back_to_the_gpt_reply_and_malformed_json_names_its_column(records):
    record = {**RECORDS[0], "conversations": [*RECORDS[0]["conversations"], {"from": "gpt", "value": "red"}]}
    del record["answer"]
    line = '{"id": "y", "answer": }'
    records.write_text(json.dumps(record) + "\n" + line + "\n")
    with pytest.raises(DataError, match=rf"mine\.jsonl:2: malformed JSON: .* \(column {line.index('}') + 1}\)"):
        get_task("jsonl").load({"jsonl": str(records)})
    records.write_text(json.dumps(record) + "\n")
    assert get_task("jsonl").load({"jsonl": str(records)})[0].target == "red"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_refuses_an_unknown_data_key_and_lists_its_keys(name):
    task = TASKS[name]
    check_data_keys([task], dict.fromkeys(task.keys, "x"))  # its own keys pass
    with pytest.raises(ConfigError) as err:
        check_data_keys([task], {**dict.fromkeys(task.keys, "x"), "no_such_key": "x"})
    assert "'no_such_key'" in str(err.value) and all(key in str(err.value) for key in task.keys)


def test_a_misspelt_or_foreign_key_is_named_with_a_hint():
    with pytest.raises(ConfigError, match=r"'jsonl_image'.*did you mean 'jsonl_images'\?"):
        check_data_keys(resolve(["jsonl"]), {"jsonl": "f", "jsonl_image": "d"})
    with pytest.raises(ConfigError, match=r"'mme' is read by mme, which this run does not evaluate"):
        check_data_keys(resolve(["pope"]), {"pope": "p", "mme": "m"})


def test_cli_refuses_an_unknown_key_before_loading_the_model(tmp_path, capsys):
    code = main(["eval", "--model", str(tmp_path / "no-model"), "--tasks", "jsonl", "--out", str(tmp_path / "o"),
                 "--data", "jsonl=f.jsonl", "--data", "jsonl_image=imgs"])  # fmt: skip
    assert code != 0 and "jsonl_image" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"choices": "cat dog"}, "`choices` must be a list of at least two options"),
        ({"task": ["color"]}, "`task` must be a name"),
        ({"id": ""}, "record has no `id`"),
        ({"answer": "", "conversations": [{"from": "human", "value": "<image>\nColour?"}]}, "no gpt reply to score"),
        ({"choices": ["cat", "dog"], "answer": "E"}, "answer 'E' is neither an option letter nor an option text"),
    ],
)
def test_bad_records_are_named(records, change, message):
    records.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps({**RECORDS[1], **change}) + "\n")
    with pytest.raises(DataError, match=rf"mine\.jsonl:2: .*{message}"):
        get_task("jsonl").load({"jsonl": str(records)})


def test_a_group_with_a_closed_answer_set_reports_answers_of_its_kind(tmp_path):
    png(tmp_path / "a.png")
    rows = [
        _record("k1", "Colour of the circle?", "red", kind="colour"),
        _record("k2", "Colour of the square?", "blue", kind="colour"),
        _record("k3", "Colour of the star?", "green", kind="colour"),
        _record("d1", "Which digit?", "7", kind="digit"),
        _record("f1", "Describe the scene.", "a red circle", kind="free"),
    ]
    path = tmp_path / "kinds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Right, wrong but a colour, and a digit where a colour was asked.
    answers = {"Colour of the circle": "red", "Colour of the square": "green", "Colour of the star": "7",
               "Which digit": "7", "Describe the scene": "something"}  # fmt: skip
    res = evaluate(Scripted(answers), ["jsonl"], tmp_path / "out", data={"jsonl": str(path)}, group_by=["kind"],
                   progress=False)  # fmt: skip
    metrics = res["tasks"]["jsonl"]["metrics"]
    assert metrics["kind=colour/accuracy"]["value"] == pytest.approx(1 / 3)
    assert metrics["kind=colour/answer_kind"] == {"value": pytest.approx(2 / 3), "n": 3}
    # One answer is no closed set: no kind rate for the digit group or the single free-text record.
    assert "kind=digit/answer_kind" not in metrics and "kind=free/answer_kind" not in metrics
