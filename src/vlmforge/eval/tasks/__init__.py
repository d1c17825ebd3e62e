"""Task registry: every benchmark is a :class:`~vlmforge.eval.types.Task` registered once by name.

Add a task by building a ``Task`` and calling :func:`register` in a module imported below (see
docs/evaluation.md). Groups (``shapes``) expand to several tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from vlmforge.errors import ConfigError
from vlmforge.eval.types import Task

TASKS: dict[str, Task] = {}
GROUPS: dict[str, tuple[str, ...]] = {}


def register(task: Task) -> Task:
    if task.name in TASKS or task.name in GROUPS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def register_group(name: str, members: Sequence[str]) -> None:
    GROUPS[name] = tuple(members)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS) + sorted(GROUPS))}")
    return TASKS[name]


def resolve(names: Iterable[str | Task]) -> list[Task]:
    """Task names (or groups, or Task objects) -> the tasks, in order, without duplicates."""
    out: list[Task] = []
    for item in names:
        if isinstance(item, Task):
            expanded = [item]
        else:
            item = item.strip()
            expanded = [get_task(n) for n in GROUPS[item]] if item in GROUPS else [get_task(item)]
        out.extend(t for t in expanded if t.name not in {o.name for o in out})
    return out


# Importing the modules registers their tasks.
from vlmforge.eval.tasks import benchmarks, shapes, vlmevalkit  # noqa: E402, F401
