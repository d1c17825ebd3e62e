"""Text-only ability of a VLM's language model through EleutherAI's lm-evaluation-harness (optional extra
``pip install 'vlmforge[lm-eval]'``). Tells the user clearly when it is not installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from vlmforge.errors import ConfigError

MISSING = (
    "text-only evaluation needs lm-evaluation-harness, which is not installed: "
    "pip install 'vlmforge[lm-eval]' (or skip this step)"
)


def lm_eval_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def evaluate_text(
    lm_dir: str | Path, tasks: list[str], *, include_path: str | Path | None = None, limit: int | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:  # fmt: skip
    """Run lm-eval's ``simple_evaluate`` on the causal LM saved in ``lm_dir`` (a plain transformers checkpoint,
    e.g. the language model exported from a LLaVA). ``include_path`` points lm-eval at local task YAMLs (no
    network: tasks must read local files). Raises ConfigError when lm-eval is not installed."""
    if not lm_eval_available():
        raise ConfigError(MISSING)
    import lm_eval  # type: ignore[import-not-found]

    task_manager = None
    if include_path is not None:
        from lm_eval.tasks import TaskManager  # type: ignore[import-not-found]

        task_manager = TaskManager(include_path=str(include_path))
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={lm_dir},trust_remote_code=False", tasks=tasks, limit=limit,
        batch_size=batch_size, task_manager=task_manager,
    )  # fmt: skip
    return {"results": out.get("results", {}), "versions": out.get("versions", {})}
