"""Task registry: every benchmark is a :class:`~vlmforge.eval.types.Task` registered once by name.

Add a task by building a ``Task`` and calling :func:`register` in a module imported below (see
docs/evaluation.md). Groups (``shapes``) expand to several tasks.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

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


def check_data_keys(tasks: Sequence[Task], data: Mapping[str, str]) -> None:
    """Every ``--data`` key must be one the chosen tasks read: a misspelt key is an error, never ignored."""
    valid = list(dict.fromkeys(key for task in tasks for key in task.keys))
    unknown = [key for key in data if key not in valid]
    if not unknown:
        return
    notes = []
    for key in unknown:
        owners = [name for name, task in TASKS.items() if key in task.keys]
        close = difflib.get_close_matches(key, valid, n=1)
        if owners:
            notes.append(f"{key!r} is read by {', '.join(owners)}, which this run does not evaluate")
        elif close:
            notes.append(f"{key!r}: did you mean {close[0]!r}?")
    chosen = ", ".join(task.name for task in tasks)
    raise ConfigError(
        f"unknown --data key(s) {', '.join(map(repr, unknown))} for task(s) {chosen}; valid keys: "
        f"{', '.join(valid) or '(none)'}" + "".join(f"; {note}" for note in notes)
    )


# Importing the modules registers their tasks.
from vlmforge.eval.tasks import benchmarks, jsonl, shapes, vlmevalkit  # noqa: E402, F401
