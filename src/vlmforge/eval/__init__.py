"""Evaluation: tasks (benchmark loaders + prompts + parsers + scorers), a batched resumable runner, reports.

    from vlmforge.eval import evaluate
    results = evaluate(generator, ["shapes"], "runs/eval", data={"world": "runs/world"})

``generator`` is any callable ``list[GenerationRequest] -> list[str]`` (see ``vlmforge.runtime``).
"""

from vlmforge.eval.runner import evaluate
from vlmforge.eval.tasks import TASKS, get_task, register, resolve
from vlmforge.eval.types import GenerationRequest, Generator, Sample, Task

__all__ = ["TASKS", "GenerationRequest", "Generator", "Sample", "Task", "evaluate", "get_task", "register", "resolve"]
