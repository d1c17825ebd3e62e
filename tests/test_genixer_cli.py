"""``vlmforge genixer`` end to end against a fake VLM server: build, generate, parse, judge, filter, select, each
with its manifest; and generation killed with SIGKILL mid-run, then rerun: nothing lost, nothing repeated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from genixer_fakes import FakeVisionServer
from test_genixer_parse import labeled
from vlmforge.cli import main
from vlmforge.synth.genixer.tasks import TASKS

SRC = Path(__file__).resolve().parents[1] / "src"


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def make_images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (64, 48), ((i * 37) % 256, (i * 91) % 256, 120)).save(folder / f"img{i:03d}.png")
    return folder


def backend(server: FakeVisionServer, batch: int = 4) -> list[str]:
    return ["--backend", "openai", "--model", "fake", "--base-url", server.base_url, "--batch-size", str(batch)]


def test_pipeline_end_to_end(tmp_path):
    data = tmp_path / "labeled.jsonl"
    data.write_text("".join(json.dumps(labeled(t, f"r{i}")) + "\n" for i, t in enumerate(TASKS)))
    assert main(["genixer", "build", "--labeled", str(data), "--out", str(tmp_path / "build")]) == 0
    built = json.loads((tmp_path / "build" / "manifest.json").read_text())
    assert built["counts"]["written"] == 9 and set(built["tasks"]) == set(TASKS)

    images = make_images(tmp_path / "pool", 6)
    (images / "broken.png").write_bytes(b"not an image")
    with FakeVisionServer() as server:
        gen = ["genixer", "generate", "--images", str(images), "--out", str(tmp_path / "gen"), *backend(server)]
        assert main(gen) == 0
        parse = ["genixer", "parse", "--generated", str(tmp_path / "gen" / "generated.jsonl")]
        assert main([*parse, "--out", str(tmp_path / "parse")]) == 0
        # No --image-folder from here on: each stage finds the images in the manifest of the stage before.
        judge = ["genixer", "judge", "--records", str(tmp_path / "parse" / "records.jsonl")]
        assert main([*judge, "--out", str(tmp_path / "judge"), *backend(server)]) == 0

    generated = json.loads((tmp_path / "gen" / "manifest.json").read_text())
    assert generated["counts"]["written"] == 54 and generated["generation"]["temperature"] == 0.2
    assert generated["rejections"] == {"corrupt_image": 9}  # one per task asked about the broken file
    parsed = json.loads((tmp_path / "parse" / "manifest.json").read_text())
    c = parsed["counts"]
    assert c["written"] + c["rejected"] == 54 and c["rejected"] > 0  # every output accounted for
    assert set(parsed["rejections"]) <= {"no_question", "no_answer"}
    assert sum(parsed["rejections"].values()) == c["rejected"]
    judged = lines(tmp_path / "judge" / "judged.jsonl")
    assert len(judged) == c["written"] and all(0 < r["score"] < 1 and r["judge"]["score"] == "p_yes" for r in judged)

    out = tmp_path / "filter"
    assert main(["genixer", "filter", "--records", str(tmp_path / "judge" / "judged.jsonl"), "--out", str(out),
                 "--min-box", "4px"]) == 0  # fmt: skip
    filtered = json.loads((out / "manifest.json").read_text())
    reg = sum(r["task"] == "reg" for r in judged)  # the fake's REG box is under 4 px on a 64x48 image
    assert filtered["rejections"] == {"box_too_small": reg} and filtered["counts"]["written"] == len(judged) - reg

    sel = ["genixer", "select", "--records", str(out / "kept.jsonl"), "--labeled", str(data), "--random", "5"]
    assert main([*sel, "--out", str(tmp_path / "select")]) == 0
    train = lines(tmp_path / "select" / "train.jsonl")
    assert [r["provenance"]["source"] for r in train] == ["labeled"] * 9 + ["synthetic"] * 5
    assert all(r["provenance"]["stage"] == "genixer.parse" for r in train[9:])


def test_generate_resumes_after_sigkill(tmp_path):
    images = make_images(tmp_path / "pool", 12)
    # The server answers 6 requests, then holds the rest: the CLI is killed mid-run however slow the machine is.
    with FakeVisionServer(hold_after=6) as server:
        args = ["genixer", "generate", "--images", str(images), "--tasks", "rec,reg,qcba", *backend(server, 2)]
        args += ["--concurrency", "2", "--max-retries", "0"]
        out = tmp_path / "killed" / "generated.jsonl"
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
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        before = out.read_bytes().count(b"\n")
        assert 1 <= before <= 6 and not (out.parent / "manifest.json").exists()  # really killed mid-run

        server.hold.release.set()
        assert main([*args, "--out", str(out.parent)]) == 0
        assert main([*args, "--out", str(tmp_path / "clean")]) == 0

    resumed, clean = lines(out), lines(tmp_path / "clean" / "generated.jsonl")
    ids = [r["id"] for r in resumed]
    assert len(ids) == 36 and len(set(ids)) == 36  # 0 lost, 0 duplicated
    assert ids == [r["id"] for r in clean] and out.read_bytes() == (tmp_path / "clean" / "generated.jsonl").read_bytes()
    manifest = json.loads((out.parent / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 36 and manifest["counts"]["skipped_as_done"] == before
    # Resuming into the folder with other settings would mix two runs: refused, naming what differs.
    changed = [a if a != "rec,reg,qcba" else "rec" for a in args]
    assert main([*changed, "--out", str(out.parent)]) == 1


def test_local_checkpoint_generates_and_parse_accounts_for_every_output(tmp_path, tiny_llava):
    from vlmforge.synth.genixer.backends import LocalVisionGenerator
    from vlmforge.synth.genixer.generate import generate_folder
    from vlmforge.synth.genixer.stages import parse_stage

    images = make_images(tmp_path / "pool", 3)
    generator = LocalVisionGenerator(str(tiny_llava), batch_size=2, device="cpu")
    m = generate_folder(images, tmp_path / "gen", generator, tasks=["rec", "reg"], batch_size=4, max_new_tokens=6)
    assert m["counts"]["written"] == 6 and m["backend"] == f"local:{tiny_llava}"
    parsed = parse_stage([tmp_path / "gen" / "generated.jsonl"], tmp_path / "parse")
    assert parsed["counts"]["written"] + parsed["counts"]["rejected"] == 6  # random weights: mostly rejected


def test_a_retrained_checkpoint_at_the_same_path_does_not_resume_the_old_outputs(tmp_path, tiny_llava):
    import shutil

    import pytest

    from vlmforge.errors import StaleOutputError
    from vlmforge.synth.genixer.backends import LocalVisionGenerator
    from vlmforge.synth.genixer.generate import generate_folder

    images, model = make_images(tmp_path / "pool", 2), tmp_path / "generator"
    shutil.copytree(tiny_llava, model)
    run = dict(tasks=["reg"], batch_size=4, max_new_tokens=4)
    generate_folder(images, tmp_path / "gen", LocalVisionGenerator(str(model), device="cpu"), **run)
    generate_folder(images, tmp_path / "gen", LocalVisionGenerator(str(model), device="cpu"), **run)  # same: resumes
    config = model / "config.json"
    config.write_text(config.read_text() + "\n")  # the folder now holds another model, as after retraining
    with pytest.raises(StaleOutputError, match="model"):
        generate_folder(images, tmp_path / "gen", LocalVisionGenerator(str(model), device="cpu"), **run)


def test_server_judge_scores_and_released_failures():
    from vlmforge.synth.genixer.judges import OpenAIJudge

    items = [(Image.new("RGB", (16, 16), c), f"Is 'Question: colour? Answer: {c}' true?") for c in ("red", "blue")]
    with FakeVisionServer() as server:
        judge = OpenAIJudge(server.base_url, "fake", concurrency=2)
        scores = judge.p_yes(items)
        released = judge.released(items)
    assert all(0 < s < 1 and reason is None for s, reason in scores)
    # The fake answers one token; the released formula divides by zero there: recorded, not dropped silently.
    assert released == [(None, "single_token_answer")] * 2


def test_planned_batches_ask_one_task_and_shards_cover_every_request_once():
    from itertools import product

    from vlmforge.synth.genixer.generate import plan_requests

    images, tasks = [f"{i:03d}.png" for i in range(10)], ["common_vqa", "rec", "dialogue"]
    everything = {f"{i}#{t}#{k}" for i, t, k in product(images, tasks, range(2))}
    shards = [plan_requests(images, tasks, per_image=2, shard=(s, 2), batch_size=4) for s in range(2)]
    ids = [r["id"] for shard in shards for r in shard]
    assert sorted(ids) == sorted(everything)  # nothing lost, nothing twice
    for shard in shards:
        batches = [shard[i : i + 4] for i in range(0, len(shard), 4)]
        # Windows of 4 images: every batch of the first two windows asks one task; the last window's two images
        # leave batches that straddle tasks.
        assert all(len({r["task"] for r in b}) == 1 for b in batches[:6])
        assert any(len({r["task"] for r in b}) > 1 for b in batches[6:])
    plain = plan_requests(images, tasks, per_image=2)  # batch size 1: image by image, as before
    assert [r["id"] for r in plain[:6]] == [f"000.png#{t}#{k}" for t in tasks for k in range(2)]
