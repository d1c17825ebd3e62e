"""Lab runs side by side in worker processes: results in the jobs' order, each job's output in its own log, the
threads divided among the workers, and a failed job named with its log."""

from __future__ import annotations

import math

import pytest
import torch

from vlmforge.shapes.lab.side_by_side import SideBySideError, run_side_by_side


def test_jobs_run_in_workers_with_their_share_of_threads_and_their_own_logs(tmp_path, capsys):
    threads = torch.get_num_threads()
    jobs = [("a", ("first",)), ("b", ("second",)), ("c", ("third",))]
    results = run_side_by_side(print, jobs, workers=2, logs=tmp_path, label="demo")
    assert results == [None, None, None]
    assert [(tmp_path / f"{name}.log").read_text() for name in "abc"] == ["first\n", "second\n", "third\n"]
    printed = capsys.readouterr().out
    assert "first" not in printed and "3/3" in printed  # the jobs' output went to their logs, progress here

    shares = run_side_by_side(torch.get_num_threads, [("x", ()), ("y", ())], workers=2, logs=tmp_path, label="t")
    assert shares == [max(1, threads // 2)] * 2
    powers = run_side_by_side(math.pow, [(f"p{i}", (2, i)) for i in range(5)], workers=2, logs=tmp_path, label="p")
    assert powers == [1, 2, 4, 8, 16]  # in the order of the jobs, whichever finished first


def test_one_worker_runs_here_and_a_failed_job_names_its_log(tmp_path, capsys):
    assert run_side_by_side(print, [("a", ("here",))], workers=2, logs=tmp_path, label="one") == [None]
    assert "here" in capsys.readouterr().out and not (tmp_path / "a.log").exists()  # a single job runs here
    with pytest.raises(SideBySideError, match=r"bad failed .*bad\.log"):
        run_side_by_side(math.sqrt, [("good", (4,)), ("bad", (-1,))], workers=2, logs=tmp_path, label="roots")
