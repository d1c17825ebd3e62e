"""What the commands print: a progress bar per long step and a one-line summary after it.

Third-party chatter (transformers' load reports and "Loading weights" bars, the Trainer's raw log dicts, the
datasets library's bars) is hidden unless ``--verbose``; warnings raised through Python's ``warnings`` module,
and vlmforge's own messages, stay visible. Library users who never call :func:`configure` keep the libraries'
own defaults.
"""

from __future__ import annotations

import os
import sys

_state = {"verbose": False}


def configure(verbose: bool) -> None:
    """Set how much the third-party libraries print, through their own logging controls."""
    _state["verbose"] = verbose
    from transformers.utils import logging as hf_logging

    if verbose:  # the libraries' defaults, also after a quiet command in the same process
        hf_logging.set_verbosity_warning()
        hf_logging.enable_progress_bar()
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # also huggingface_hub's download bars
    if "datasets" in sys.modules:
        import datasets

        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    else:  # read when datasets is imported; importing it here would slow down every command
        os.environ.setdefault("DATASETS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def verbose() -> bool:
    """Whether the command runs with ``--verbose`` (raw Trainer logs, third-party reports)."""
    return _state["verbose"]
