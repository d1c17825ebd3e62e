"""The Uni-X lab's pieces: its recipe group, what --long changes, conflict batches that differ only by the image,
GenEval's floor and ceiling on the world's renders, and a report whose verdicts follow the numbers."""

from __future__ import annotations

import pytest

from unified_train_helpers import tiny_unified_setup
from vlmforge.data.chat import IGNORE_INDEX
from vlmforge.models.unified import UnifiedSpec, unified_from_pretrained_lm
from vlmforge.shapes.lab.config import LabConfig
from vlmforge.shapes.lab.run import expand_recipes
from vlmforge.shapes.lab.unix import UnixSettings
from vlmforge.shapes.lab.unix_measures import conflict_batches
from vlmforge.shapes.lab.unix_report import unix_report_lines
from vlmforge.train.conflict import WEIGHT_TYPES


def test_the_unix_group_is_both_arms_and_long_trains_more(tmp_path):
    assert expand_recipes("bunny,unix") == ("bunny", "unix-shared", "unix-two_end")
    default, long = UnixSettings.for_lab(LabConfig(out=tmp_path)), UnixSettings.for_lab(LabConfig.long(tmp_path))
    assert default == UnixSettings()
    assert long.samples > default.samples and long.geneval_per_category > default.geneval_per_category


def test_conflict_sides_train_the_same_answers_with_and_without_the_image(tmp_path):
    setup = tiny_unified_setup(tmp_path)
    model, tokenizer = unified_from_pretrained_lm(str(setup["lm"]), UnifiedSpec("two_end", 1, 1, 16, (2, 2)))
    records = [
        {"image": f"images/{i:03d}.png", "conversations": [{"value": "<image>\nWhat colour is the circle?"},
                                                           {"value": c}]}
        for i, c in enumerate(["red", "blue", "red"])
    ]  # fmt: skip
    codes = {r["image"]: [i, 3, 7, 15] for i, r in enumerate(records)}
    text, multimodal = conflict_batches(model, tokenizer, records, codes, size=2)
    assert len(text) == len(multimodal) == 2
    for t, m in zip(text, multimodal, strict=True):
        for t_labels, m_labels in zip(t["labels"], m["labels"], strict=True):
            assert t_labels[t_labels != IGNORE_INDEX].tolist() == m_labels[m_labels != IGNORE_INDEX].tolist()
        assert not (t["input_ids"] == model.config.vision_start_token_id).any()
        assert (m["input_ids"] == model.config.vision_start_token_id).sum() == len(m["input_ids"])


def _conflict(value: float) -> dict:
    return {"layers": [1, 2], "conflict": {kind: [value, value] for kind in WEIGHT_TYPES}}


def _arm(conflicts: list[float], geneval: float, params: tuple[int, int]) -> dict:
    runs = [{"seed": s, "parameters": {"active": params[0], "total": params[1]}, "conflict_init": _conflict(0.1),
             "conflict_trained": _conflict(c)} for s, c in enumerate(conflicts)]  # fmt: skip
    n = len(conflicts)
    mean = sum(conflicts) / n
    se = (sum((c - mean) ** 2 for c in conflicts) / (n - 1) / n) ** 0.5

    def entry(m, s=0.001):
        return {"mean": m, "se": s, "per_seed": [m] * n}

    summary = {"conflict_init": entry(0.1), "conflict_trained": entry(mean, se), "text_loss_init": entry(5.0),
               "text_loss": entry(3.0), "geneval_cfg1": entry(geneval), "geneval_cfg3": entry(geneval + 0.1)}  # fmt: skip
    return {"runs": runs, "summary": summary}


def _recipe(accuracy: float) -> dict:
    types = ("color", "shape", "count", "position", "exist")
    return {"summary": {t: {"mean": accuracy, "question_only": 0.3} for t in types}}


@pytest.mark.parametrize(
    ("two_end", "word"), [([0.1, 0.11, 0.12], "lower than"), ([0.5, 0.61, 0.4], "not distinguishable from")]
)
def test_the_report_states_what_the_numbers_say(tmp_path, two_end, word):
    unix = {"geneval_items": 48, "ceiling": {"overall": 0.96}, "random_codes": {"overall": 0.2},
            "arms": {"shared": _arm([0.5, 0.52, 0.51], 0.3, (1_000_000, 1_000_000)),
                     "two_end": _arm(two_end, 0.4, (1_000_000, 1_400_000))}}  # fmt: skip
    recipes = {"unix-shared": _recipe(0.5), "unix-two_end": _recipe(0.31)}
    text = "\n".join(unix_report_lines(unix, tmp_path, recipes))
    assert f"is {word} shared" in text
    assert "| two_end | 1.00 M / 1.40 M |" in text
    assert "cfg 3) is two_end 0.500" in text and "ceiling of 0.960 and random codes' 0.200" in text
    assert "Reading (shared): 0.500 on the exact question types, above" in text
    assert "Reading (two_end): 0.310 on the exact question types, not above" in text
    assert (tmp_path / "unix_conflict.png").stat().st_size > 0
