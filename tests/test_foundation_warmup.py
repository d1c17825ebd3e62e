"""The reading phase's warm-up goes on until its lookups form: held steps in the optimiser, extension in the phase."""

from __future__ import annotations

import pytest
import torch

from test_foundation import TINY_LM, TINY_VISION
from test_foundation_reader import reading_world  # noqa: F401  (a fixture)
from vlmforge.shapes.foundation.lm import new_lm
from vlmforge.shapes.foundation.loop import Optimiser
from vlmforge.shapes.foundation.reader import ReaderSpec, teach_reading


def test_held_steps_are_extra_steps_at_the_learning_rate_reached():
    weight = torch.nn.Parameter(torch.zeros(()))
    optimiser = Optimiser([weight], steps=8, lr=0.1, weight_decay=0.0, warmup_steps=2, desc="", progress=False)
    values = []
    for held in [False] * 4 + [True, True] + [False] * 4:
        values.append(float(weight.detach()))
        # A constant gradient: each AdamW step moves the weight by the learning rate.
        optimiser.take(weight * 1.0, advance_schedule=not held)
    log = optimiser.finish()
    assert len(log.losses) == 10 and optimiser.scheduled == 8
    moves = [a - b for a, b in zip(values, values[1:], strict=False)] + [values[-1] - float(weight.detach())]
    # The two held steps move it as far as the step after them (the schedule waits); the cosine then goes on.
    assert moves[4] == pytest.approx(moves[5]) == pytest.approx(moves[6])
    assert moves[3] > moves[4] > moves[7] > 0


def _teach(reading_world, answers: list[bool], give_up: bool = True, extension: int = 6):  # noqa: F811
    """10 steps, 4 of them the warm-up, extended by up to 6 steps checked every 2; ``answers``: after_warm's."""
    root, world, tok = reading_world
    spec = ReaderSpec(steps=10, batch_size=4, tasks=("color", "shape"), warm_tasks=("color",), warm_fraction=0.4,
                      box_steps=0, warm_extension=extension)  # fmt: skip
    asked = iter(answers)
    log = teach_reading(new_lm(tok, TINY_LM, 0), tok, root, world.image_paths, world.regions, TINY_VISION, spec,
                        progress=False, after_warm=lambda: next(asked), give_up=give_up, check_every=2)  # fmt: skip
    return log, next(asked, None)


def test_a_warm_up_that_forms_late_goes_on_until_it_has(reading_world):  # noqa: F811
    log, left = _teach(reading_world, [False, False, True, "never asked"])
    # Asked at its end and after 2 and 4 extra steps; then every task, for the 6 steps the schedule still had.
    assert left == "never asked" and log.extra["warm_extension"] == 4 and len(log.losses) == 14
    assert "stopped_after_warm" not in log.extra


def test_a_warm_up_that_never_forms_stops_or_goes_on_as_asked(reading_world):  # noqa: F811
    log, left = _teach(reading_world, [False] * 4 + ["never asked"])
    assert left == "never asked" and log.extra["warm_extension"] == 6 and log.extra["stopped_after_warm"] == 10
    log, _ = _teach(reading_world, [False] * 4, give_up=False)  # the last start: kept, so it runs to the end
    assert log.extra["warm_extension"] == 6 and len(log.losses) == 16 and "stopped_after_warm" not in log.extra
    # An extension that is not a multiple of the check's interval is still its limit: checked at 0, 2, 4 and 5.
    log, left = _teach(reading_world, [False] * 4 + ["never asked"], extension=5)
    assert left == "never asked" and log.extra["warm_extension"] == 5 and log.extra["stopped_after_warm"] == 9


def test_without_a_check_the_warm_up_ends_on_schedule(reading_world):  # noqa: F811
    root, world, tok = reading_world
    spec = ReaderSpec(steps=6, batch_size=4, tasks=("color",), warm_fraction=0.5, box_steps=0)
    log = teach_reading(new_lm(tok, TINY_LM, 0), tok, root, world.image_paths, world.regions, TINY_VISION, spec,
                        progress=False)  # fmt: skip
    assert len(log.losses) == 6 and log.extra["warm_extension"] == 0
