"""`vlmforge eval` fits each question's answer into the model's context, counting prompts as the server does: a
question with no room stops the run naming it (or is skipped and counted), a long one gets its budget cut and
counted, and a run whose questions fit is unchanged."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from eval_helpers import png
from serve_support import chatty_llava, vlm  # noqa: F401  (fixtures: a tiny LLaVA with varied answers, loaded)
from vlmforge.errors import ContextLengthError, DataError
from vlmforge.eval import evaluate
from vlmforge.eval.generator import load_generator
from vlmforge.runtime import Conversation, SamplingParams, VisionLanguageModel

SHORT = ["What colour is the circle?", "How many objects are there?"]
TOKENS = 8


def _question(vlm, room: int) -> str:  # noqa: F811
    """A question whose prompt, with the test image, leaves exactly ``room`` tokens of the context."""
    img = Image.new("RGB", (8, 8), "red")
    target, words = vlm.context - room, 1
    for _ in range(5):  # a word is a token or so: a few corrections reach the target
        text = "What colour? " + " ".join(["red"] * words)
        words += target - vlm.prompt_length(Conversation.single_turn(text, [img]))
    assert vlm.prompt_length(Conversation.single_turn(text, [img])) == target
    return text


def _records(tmp_path, questions: list[str]) -> dict[str, str]:
    png(tmp_path / "a.png")
    rows = [
        {"id": f"q{i}", "image": "a.png", "answer": "red",
         "conversations": [{"from": "human", "value": f"<image>\n{q}"}]}
        for i, q in enumerate(questions, 1)
    ]  # fmt: skip
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"jsonl": str(tmp_path / "mine.jsonl")}


def _run(generator, out, data, **options):
    return evaluate(generator, ["jsonl"], out, data=data, max_new_tokens=TOKENS, progress=False, **options)


def _rows(out) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / "samples_jsonl.jsonl").read_text().splitlines())}


def test_a_question_with_no_room_for_an_answer_stops_the_run_naming_it(tmp_path, vlm, chatty_llava):  # noqa: F811
    data = _records(tmp_path, [SHORT[0], _question(vlm, 0)])
    with pytest.raises(DataError, match="no room for an answer") as refused:
        _run(load_generator(chatty_llava), tmp_path / "out", data)
    message = str(refused.value)
    assert message.startswith(f"{data['jsonl']}:2: task jsonl, question q2: ")
    assert f"its prompt has {vlm.context} tokens and the model's context is {vlm.context}" in message
    assert refused.value.code == "too_long"
    assert not list((tmp_path / "out").glob("samples_*"))  # refused before anything was generated


def test_with_skip_a_question_too_long_is_left_out_and_counted(tmp_path, vlm, chatty_llava):  # noqa: F811
    data = _records(tmp_path, [SHORT[0], _question(vlm, 0), SHORT[1]])
    generator, asked = load_generator(chatty_llava), []

    def counting(requests):
        asked.extend(r.prompt for r in requests)
        return generator(requests)

    counting.answer_budget = generator.answer_budget
    out = tmp_path / "out"
    result = _run(counting, out, data, on_error="skip")["tasks"]["jsonl"]
    assert result["rejections"] == {
        "total": 1, "by_reason": {"too_long": 1}, "examples": {"too_long": [f"{data['jsonl']}:2"]},
    }  # fmt: skip
    assert result["n_samples"] == 2 and result["metrics"]["accuracy"]["n"] == 2 and asked == SHORT
    rows = _rows(out)
    assert rows["q2"]["skipped"] == "too_long" and "prediction" not in rows["q2"]
    assert "question q2" in rows["q2"]["reason"] and "prediction" in rows["q1"]
    assert "1 sample(s) skipped" in (out / "report.md").read_text()
    again = _run(counting, out, data, on_error="skip")["tasks"]["jsonl"]
    assert again["rejections"]["total"] == 1 and asked == SHORT  # answers reused, the skip counted again
    with pytest.raises(DataError, match="question q2"):  # a run that does not skip refuses it, saved skip or not
        _run(counting, out, data)


def test_a_long_prompt_has_its_answer_budget_cut_and_counted(tmp_path, vlm, chatty_llava, monkeypatch):  # noqa: F811
    data = _records(tmp_path, [SHORT[0], _question(vlm, 3), SHORT[1]])
    batches, generate = [], VisionLanguageModel.generate

    def spy(self, conversations, params=None):
        batches.append(([self.prompt_length(c) for c in conversations], params.max_new_tokens))
        return generate(self, conversations, params)

    monkeypatch.setattr(VisionLanguageModel, "generate", spy)
    out = tmp_path / "out"
    result = _run(load_generator(chatty_llava, batch_size=4), out, data)["tasks"]["jsonl"]
    assert result["cut_to_context"] == 1 and "rejections" not in result and result["n_samples"] == 3
    rows = _rows(out)
    assert rows["q2"]["max_new_tokens"] == 3 and "max_new_tokens" not in rows["q1"]
    assert all(max(lengths) + tokens <= vlm.context for lengths, tokens in batches)  # nothing ran past the context
    assert sorted(tokens for _, tokens in batches) == [3, TOKENS]  # the others kept the task's whole budget
    assert "1 answer(s) with max_new_tokens cut" in (out / "report.md").read_text()


def test_a_run_whose_questions_fit_is_unchanged(tmp_path, vlm, chatty_llava):  # noqa: F811
    data = _records(tmp_path, SHORT)
    out = tmp_path / "out"
    result = _run(load_generator(chatty_llava), out, data)["tasks"]["jsonl"]
    assert not {"rejections", "cut_to_context"} & set(result) and result["n_samples"] == 2
    rows = _rows(out)
    img = Image.open(tmp_path / "a.png").convert("RGB")
    expected = vlm.generate([Conversation.single_turn(q, [img]) for q in SHORT], SamplingParams(TOKENS))
    assert [rows[f"q{i}"]["prediction"] for i in (1, 2)] == [c.text for c in expected]
    assert all(set(r) == {"id", "prompt", "prediction", "parsed", "target", "correct"} for r in rows.values())
    assert "Model context" not in (out / "report.md").read_text()


class Opened:
    """A generator's budgets counted from its questions' real images (``counts_pixels``), as before."""

    counts_pixels = True

    def __init__(self, generator):
        self.answer_budget = generator.answer_budget

    def __call__(self, requests):
        raise AssertionError("only counted")


def test_a_fixed_count_model_is_counted_without_opening_the_images(tmp_path, vlm, chatty_llava, monkeypatch):  # noqa: F811
    """Every image takes the tiny LLaVA the same number of tokens, so a question is counted from how many images it
    has: over unreadable images the budgets are those counted from the real images' pixels, and the run that
    generates then names the unreadable image."""
    import dataclasses

    from vlmforge.eval.budget import fit_budgets
    from vlmforge.eval.tasks import get_task

    data = _records(tmp_path, [SHORT[0], _question(vlm, 3), _question(vlm, 0)])
    (tmp_path / "b.png").write_bytes(b"not a png")
    task, generator = get_task("jsonl"), load_generator(chatty_llava)
    real = task.load(data)
    unreadable = [dataclasses.replace(s, images=[str(tmp_path / "b.png")]) for s in real]
    assert generator.counts_pixels is False
    unopened = fit_budgets(generator, task, unreadable, TOKENS, "skip")

    processed, prompt_tokens = [], VisionLanguageModel.prompt_tokens
    monkeypatch.setattr(VisionLanguageModel, "counts_pixels", property(lambda self: True))
    monkeypatch.setattr(
        VisionLanguageModel, "prompt_tokens", lambda self, c: processed.append(c) or prompt_tokens(self, c)
    )
    pixels = fit_budgets(Opened(generator), task, real, TOKENS, "skip")
    assert len(processed) == 3  # the pixel path did process each question's image
    assert unopened == pixels and pixels.cut == {"q2": 3} and list(pixels.skipped) == ["q3"]
    monkeypatch.undo()

    broken = tmp_path / "broken.jsonl"
    broken.write_text((tmp_path / "mine.jsonl").read_text().replace('"a.png"', '"b.png"'))
    with pytest.raises(DataError, match=r"broken.jsonl:1: cannot read image .*b.png") as refused:
        _run(generator, tmp_path / "out", {"jsonl": str(broken)}, on_error="skip")
    assert refused.value.code == "bad_image"


class Budgeted:
    """A fake generator whose model refuses one prompt and has room for 2 answer tokens after another."""

    def __init__(self, refuse: str, cut: str):
        self.refuse, self.cut, self.asked = refuse, cut, []

    def answer_budget(self, request) -> int:
        if request.prompt.startswith(self.refuse):
            raise ContextLengthError("too long", context=10, prompt_tokens=12)
        return 2 if request.prompt.startswith(self.cut) else request.max_new_tokens

    def __call__(self, requests):
        self.asked += [(r.prompt.splitlines()[0], r.max_new_tokens) for r in requests]
        return ["A" for _ in requests]


def test_a_circular_question_with_a_skipped_rotation_is_left_out_whole(tmp_path):
    png(tmp_path / "a.png")
    rows = [
        {"id": "m1", "image": "a.png", "answer": "A", "choices": ["cat", "dog", "cow"],
         "conversations": [{"from": "human", "value": "<image>\nWhich one?"}]},
        {"id": "s1", "image": "a.png", "answer": "red", "conversations": [{"from": "human", "value": "<image>\nHue?"}]},
    ]  # fmt: skip
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"jsonl": str(tmp_path / "mine.jsonl")}
    generator = Budgeted(refuse="Which one?\nA. dog", cut="Hue?")
    result = _run(generator, tmp_path / "out", data, on_error="skip")["tasks"]["jsonl"]
    assert result["rejections"]["total"] == 1 and result["cut_to_context"] == 1
    assert result["n_questions"] == 1 and result["n_samples"] == 1  # m1 out whole, though two rotations were answered
    assert ("Hue?", 2) in generator.asked and ("Which one?", TOKENS) in generator.asked
    with pytest.raises(DataError, match=r"mine.jsonl:1: task jsonl, question m1#r\d: its prompt has 12 tokens"):
        _run(Budgeted(refuse="Which one?\nA. dog", cut="Hue?"), tmp_path / "again", data)


def test_the_cli_skips_on_request_and_otherwise_names_the_question(tmp_path, vlm, chatty_llava, capsys):  # noqa: F811
    from vlmforge.cli import main

    data = _records(tmp_path, [SHORT[0], _question(vlm, 0), _question(vlm, 2)])
    args = ["eval", "--model", str(chatty_llava), "--tasks", "jsonl", "--data", f"jsonl={data['jsonl']}",
            "--max-new-tokens", str(TOKENS)]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "raise")]) != 0
    assert f"{data['jsonl']}:2: task jsonl, question q2" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "skip"), "--on-error", "skip"]) == 0
    assert "(1 skipped, 1 cut to the model's context)" in capsys.readouterr().out
    results = json.loads((tmp_path / "skip" / "results.json").read_text())
    assert results["config"]["on_error"] == "skip" and results["tasks"]["jsonl"]["n_samples"] == 2


def test_a_suite_refuses_an_unknown_on_error(tmp_path):
    from vlmforge.errors import ConfigError
    from vlmforge.eval.suite import load_suite

    (tmp_path / "s.yaml").write_text("models: [{name: m, path: m}]\non_error: ignore\n")
    with pytest.raises(ConfigError, match="`on_error` must be one of raise, skip, got 'ignore'"):
        load_suite(tmp_path / "s.yaml")
