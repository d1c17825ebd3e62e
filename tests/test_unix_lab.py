"""The Uni-X lab's pieces: its recipe group, what --long changes, conflict on the shared middle layers,
GenEval's floor and ceiling on the world's renders, and a report whose verdicts follow the numbers."""

from __future__ import annotations

import math

import pytest

from unified_train_helpers import tiny_unified_setup
from vlmforge.models.image_tokenizer import load_image_tokenizer
from vlmforge.models.unified import UnifiedSpec, unified_from_pretrained_lm
from vlmforge.models.unified.chat_processor import UnifiedChatProcessor
from vlmforge.shapes.lab.config import LabConfig
from vlmforge.shapes.lab.run import expand_recipes
from vlmforge.shapes.lab.unix import UnixSettings
from vlmforge.shapes.lab.unix_measures import conflict_summary
from vlmforge.shapes.lab.unix_report import unix_report_lines
from vlmforge.train.conflict import WEIGHT_TYPES
from vlmforge.train.conflict_data import first_turns


def test_the_unix_group_is_both_arms_and_long_trains_more(tmp_path):
    assert expand_recipes("bunny,unix") == ("bunny", "unix-shared", "unix-two_end")
    default, long = UnixSettings.for_lab(LabConfig(out=tmp_path)), UnixSettings.for_lab(LabConfig.long(tmp_path))
    assert default == UnixSettings()
    assert long.samples > default.samples and long.geneval_per_category > default.geneval_per_category


def test_the_lab_measures_conflict_on_the_shared_middle_layers(tmp_path):
    setup = tiny_unified_setup(tmp_path)
    model, tokenizer = unified_from_pretrained_lm(str(setup["lm"]), UnifiedSpec("two_end", 1, 1, 16, (2, 2)))
    processor = UnifiedChatProcessor(tokenizer, load_image_tokenizer(setup["image_tokenizer"]), model.config)
    turns = first_turns(setup["understanding"], setup["root"])[:8]
    result = conflict_summary(model, processor, turns, seed=0)
    assert result["layers"] == [1, 2] and set(result["mean_per_type"]) == set(WEIGHT_TYPES)
    assert all(math.isfinite(v) for values in result["conflict"].values() for v in values)
    per_type = [sum(v) / 2 for v in result["conflict"].values()]
    assert result["mean"] == pytest.approx(sum(per_type) / len(per_type))


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
