"""Unicorn stages 1-2: validation paths, both backends end to end, and resume after a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from synth_fakes import FakeOpenAIServer, ScriptedGenerator
from vlmforge.cli import main
from vlmforge.errors import DataError
from vlmforge.synth.backends import LocalHFGenerator, OpenAIGenerator
from vlmforge.synth.jobs import ResumableJsonl
from vlmforge.synth.unicorn.generate import densify, instruct
from vlmforge.synth.unicorn.prompts import DENSIFY_PROMPT, TASK_KINDS
from vlmforge.synth.unicorn.qa import QAError, assign_kind, parse_qa

SRC = Path(__file__).resolve().parents[1] / "src"

ALL_MC = {"multiple_choice": 1.0}
ALL_OPEN = {"open_qa": 1.0}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_parse_qa_validates_and_dedupes():
    mc = {"question": "Colour?", "options": ["red", "blue", "green", "pink"], "answer": "(B)"}
    pairs = parse_qa(json.dumps([mc] + [dict(mc, question=f"Q{i}?") for i in range(6)]), "multiple_choice")
    assert len(pairs) == 7 and pairs[0]["answer"] == "B" and pairs[0]["options"]["D"] == "pink"
    dup = [{"question": "Same?", "answer": "x"}] * 3 + [{"question": f"q{i}", "answer": "y"} for i in range(5)]
    assert [p["question"] for p in parse_qa(json.dumps(dup), "open_qa")] == [
        "Same?",
        "q0",
        "q1",
        "q2",
        "q3",
        "q4",
    ]
    many = [{"question": f"q{i}", "answer": "y"} for i in range(12)]
    assert len(parse_qa(json.dumps({"qa": many}), "complex_reasoning")) == 8
    cases = {
        "no JSON here": "no_json",
        '{"qa": [': "bad_json",
        '{"qa": "text"}': "bad_schema",
        '[{"question": "", "answer": "a"}]': "empty_field",
        json.dumps([dict(mc, answer="E")] * 6): "bad_answer",
        json.dumps([dict(mc, options=["a", "a", "b", "c"])] * 6): "bad_options",
        json.dumps(dup[:4]): "too_few_pairs",
    }
    for text, reason in cases.items():
        kind = "multiple_choice" if "options" in text else "open_qa"
        with pytest.raises(QAError) as err:
            parse_qa(text, kind)
        assert err.value.reason == reason, text


def test_assign_kind_is_deterministic_and_follows_ratios():
    ids = [f"cap{i}" for i in range(3000)]
    kinds = Counter(assign_kind(i, {"multiple_choice": 1, "open_qa": 2, "complex_reasoning": 1}) for i in ids)
    assert set(kinds) == set(TASK_KINDS)
    assert 0.45 < kinds["open_qa"] / len(ids) < 0.55
    assert [assign_kind(i, {"open_qa": 1, "complex_reasoning": 1}) for i in ids[:50]] == [
        assign_kind(i, {"open_qa": 1, "complex_reasoning": 1}) for i in ids[:50]
    ]
    assert all(assign_kind(i, {"complex_reasoning": 1}) == "complex_reasoning" for i in ids[:20])


def test_densify_reads_text_and_jsonl_and_records_manifest(tmp_path):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("a red circle\n\ntwo blue squares\na red circle\n")
    m = densify(seeds, tmp_path / "d", ScriptedGenerator(), batch_size=2)
    out = lines(tmp_path / "d" / "captions.jsonl")
    assert [r["id"] for r in out] == ["line1", "line3", "line4"]  # text duplicates are kept in stage 1
    assert out[1]["seed_caption"] == "two blue squares" and "two blue squares" in out[1]["caption"]
    assert m["prompts"]["user"] == DENSIFY_PROMPT and m["backend"] == "scripted" and len(m["inputs"][0]["sha256"]) == 64
    assert m["counts"]["written"] == 3 and json.loads((tmp_path / "d" / "manifest.json").read_text()) == m

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": 1, "caption": "ok"}, {"caption": "no id"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        densify(bad, tmp_path / "e", ScriptedGenerator())


def test_instruct_validation_retry_rejection_and_duplicates(tmp_path):
    caps = [
        {"id": "a", "caption": "a red circle", "seed_caption": "circle"},
        {"id": "b", "caption": "[FLAKY] a blue square"},
        {"id": "c", "caption": "[BADJSON] a green star"},
        {"id": "d", "caption": "A red   circle"},  # same caption as "a" after normalising
        {"id": "a", "caption": "repeated id"},
        {"id": "e", "caption": "[MC3] a pink cone"},
    ]
    src = write_jsonl(tmp_path / "caps.jsonl", caps)
    m = instruct(src, tmp_path / "i", ScriptedGenerator(), kind_ratios=ALL_MC, max_attempts=2, batch_size=4)
    out = {r["id"]: r for r in lines(tmp_path / "i" / "records.jsonl")}
    assert sorted(out) == ["a", "b"]
    assert out["b"]["provenance"]["attempt"] == 1  # malformed at seed 0, valid after a retry with seed 1
    assert m["rejections"] == {"bad_json": 1, "duplicate_caption": 1, "bad_options": 1}
    assert m["counts"]["duplicate_id"] == 1 and m["counts"]["pending"] == 0

    rec = out["a"]
    assert rec["task"] == "multiple_choice" and rec["image_embedding"] == "a" and rec["caption"] == "a red circle"
    assert rec["provenance"]["seed_caption"] == "circle" and "image" not in rec
    conv = rec["conversations"]
    assert [t["from"] for t in conv] == ["human", "gpt"] * 7
    assert conv[0]["value"].startswith("<image>\n") and sum("<image>" in t["value"] for t in conv) == 1
    assert "\nA. " in conv[0]["value"] and all(t["value"] in "ABCD" for t in conv[1::2])


def test_generation_failures_stay_pending_and_are_retried_on_rerun(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", [{"id": str(i), "caption": f"cap {i} [X{i % 2}]"} for i in range(6)])
    m = instruct(src, tmp_path / "o", ScriptedGenerator(fail_markers=("[X1]",)), kind_ratios=ALL_OPEN)
    assert m["counts"]["written"] == 3 and m["counts"]["pending"] == 3
    assert m["failures_this_run"] == {"generation_failed:ScriptedFailure": 3}
    gen = ScriptedGenerator()
    m = instruct(src, tmp_path / "o", gen, kind_ratios=ALL_OPEN)
    assert m["counts"]["written"] == 6 and m["runs"] == 2 and m["counts"]["skipped_as_done"] == 3
    assert sum(n for n, _ in gen.calls) == 3  # only the pending ones were generated again
    assert m["tasks"] == {"open_qa": 6}


def test_torn_tail_is_truncated_and_the_record_redone(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", [{"id": str(i), "caption": f"caption {i}"} for i in range(5)])
    full = tmp_path / "full"
    instruct(src, full, ScriptedGenerator(), kind_ratios=ALL_OPEN, batch_size=2)
    reference = (full / "records.jsonl").read_bytes()
    part = tmp_path / "part"
    part.mkdir()
    cut = reference.index(b"\n", reference.index(b"\n") + 1) + 1 + 40  # two records + 40 bytes of the third
    (part / "records.jsonl").write_bytes(reference[:cut])
    m = instruct(src, part, ScriptedGenerator(), kind_ratios=ALL_OPEN, batch_size=2)
    assert (part / "records.jsonl").read_bytes() == reference
    assert m["counts"]["repaired_torn_bytes"] == 40 and m["counts"]["skipped_as_done"] == 2
    # A lone garbage line (write cut right at a newline) is removed too.
    (part / "x.jsonl").write_bytes(b'{"id": "1"}\n{"id": \n')
    assert ResumableJsonl(part / "x.jsonl").done == {"1"}


def test_openai_backend_end_to_end(tmp_path):
    caps = [
        {"id": "ok", "caption": "a red circle"},
        {"id": "slow", "caption": "[SLOW] a blue square"},
        {"id": "bad", "caption": "[BADJSON] a star"},
        {"id": "flaky", "caption": "[FLAKY] a cone"},
    ]
    src = write_jsonl(tmp_path / "c.jsonl", caps)
    with FakeOpenAIServer() as server:
        gen = OpenAIGenerator(server.base_url, "fake", concurrency=4, max_retries=2, timeout=0.5, backoff_base=0.01)
        m = instruct(src, tmp_path / "o", gen, kind_ratios=ALL_OPEN, max_attempts=3)
        hits = dict(server.hits)
    written = [r["id"] for r in lines(tmp_path / "o" / "records.jsonl")]
    assert written == ["ok", "slow", "flaky"]  # input order, whatever order the requests finished in
    assert m["rejections"] == {"bad_json": 1} and m["counts"]["retries_this_run"] == 3  # bad x2 + flaky x1
    bad_caption = caps[2]["caption"]
    assert [hits[(bad_caption, s)] for s in range(3)] == [1, 1, 1]  # a new seed per attempt
    assert hits[(caps[1]["caption"], 0)] == 2  # the timed-out request was retried by the backend
    assert m["backend"].startswith("openai:") and m["backend"].endswith("#fake")


def test_local_backend_through_densify(tiny_parts, tmp_path):
    _, lm_dir = tiny_parts
    seeds = tmp_path / "s.txt"
    seeds.write_text("a red circle\ntwo blue squares\nthree stars\n")
    gen = LocalHFGenerator(str(lm_dir), batch_size=2, device="cpu")
    m = densify(seeds, tmp_path / "d", gen, batch_size=3, max_new_tokens=8, min_words=0)
    assert m["counts"]["written"] == 3 and m["backend"] == f"local:{lm_dir}"
    assert [r["seed_caption"] for r in lines(tmp_path / "d" / "captions.jsonl")] == seeds.read_text().split("\n")[:3]


def test_cli_densify_resumes_after_sigkill(tmp_path):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("".join(f"seed caption number {i}\n" for i in range(30)))
    # The server answers 4 requests, then holds the rest: the CLI is killed mid-run however slow the machine is.
    with FakeOpenAIServer(hold_after=4) as server:
        args = ["unicorn", "densify", "--seeds", str(seeds), "--backend", "openai", "--model", "fake"]
        args += [
            "--base-url",
            server.base_url,
            "--batch-size",
            "2",
            "--concurrency",
            "2",
            "--max-retries",
            "0",
        ]
        out = tmp_path / "killed" / "captions.jsonl"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(SRC), *sys.path])}
        proc = subprocess.Popen(
            [sys.executable, "-m", "vlmforge.cli", *args, "--out", str(out.parent)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 300  # guards against a hang only: the wait is for the first record
        while (not out.exists() or b"\n" not in out.read_bytes()) and proc.poll() is None:
            assert time.monotonic() < deadline, "the CLI wrote no record"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        done_before = out.read_bytes().count(b"\n")
        assert 1 <= done_before <= 4  # really interrupted mid-run: the held requests never answered
        assert not (out.parent / "manifest.json").exists()

        server.hold.release.set()
        assert main([*args, "--out", str(out.parent)]) == 0
        assert main([*args, "--out", str(tmp_path / "clean")]) == 0

    resumed = lines(out)
    assert out.read_bytes() == (tmp_path / "clean" / "captions.jsonl").read_bytes()
    assert [r["id"] for r in resumed] == [f"line{i + 1}" for i in range(30)]  # none lost, none duplicated
    manifest = json.loads((out.parent / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 30 and manifest["counts"]["skipped_as_done"] == done_before


def test_a_stage_that_accepts_nothing_leaves_an_empty_output_for_the_next_stage(tmp_path):
    from vlmforge.synth.runner import BatchOutcome, run_stage

    def reject_all(batch):
        return BatchOutcome(rejected=[(r["id"], "no_question") for r in batch])

    counts = run_stage([{"id": "a"}, {"id": "b"}], tmp_path, "out.jsonl", reject_all, batch_size=1, desc="t")
    assert (tmp_path / "out.jsonl").read_text() == ""  # exists, holds nothing
    assert counts["counts"]["written"] == 0 and counts["rejections"] == {"no_question": 2}
