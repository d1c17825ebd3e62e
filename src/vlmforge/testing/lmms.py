"""Run lmms-eval's command line where two of its imports are missing: ``python -m vlmforge.testing.lmms ARGS``.

lmms-eval (0.7.x) imports ``decord``, a video reader, at the top of its ``llava_hf`` model although images never
need it, and its evaluator patches ``filelock._api``, a private module that filelock 4 no longer has; lmms-eval
declares neither. Where ``decord`` cannot be imported, a stand-in module that refuses video is used; where
``filelock._api`` is absent, lmms-eval's lock patch (for concurrent dataset downloads) is skipped. With
``pip install decord 'filelock<4'`` neither applies and plain ``lmms-eval`` runs the same (docs/evaluation.md).
"""

from __future__ import annotations

import importlib.util
import sys
import types


def lmms_eval_available() -> bool:
    return importlib.util.find_spec("lmms_eval") is not None


def _no_video(*args, **kwargs):
    raise RuntimeError("video input needs the decord package (pip install decord)")


def apply_shims() -> list[str]:
    """Stand in for what is missing (see the module's doc); returns the names of the stand-ins applied."""
    applied = []
    if importlib.util.find_spec("decord") is None:
        stub = types.ModuleType("decord")
        stub.VideoReader, stub.cpu = _no_video, _no_video
        sys.modules["decord"] = stub
        applied.append("decord")
    if importlib.util.find_spec("filelock._api") is None:
        from lmms_eval import evaluator

        patch = getattr(evaluator, "_enable_reentrant_filelocks", None)
        if patch is not None:
            patch._patched = True  # lmms-eval's own flag for "already patched"
            applied.append("filelock._api")
    return applied


def command(args: list[str]) -> list[str]:
    """The command line that runs lmms-eval with ``args`` through this module."""
    return [sys.executable, "-m", "vlmforge.testing.lmms", *args]


if __name__ == "__main__":
    apply_shims()
    from lmms_eval.__main__ import cli_evaluate

    cli_evaluate()
