"""Tiny benchmark fixtures and fake generators shared by the tests/test_eval_*.py files."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from PIL import Image

from vlmforge.eval.tasks import resolve
from vlmforge.eval.types import GenerationRequest


def png(path: Path, color: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def _rec(rid: str, task: str, question: str, answer, image: str, **extra) -> dict:
    return {
        "id": rid, "image": image, "task": task, "answer": answer,
        "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                          {"from": "gpt", "value": str(answer)}],
        **extra,
    }  # fmt: skip


def shapes_world(root: Path, world_json: dict | None = None) -> Path:
    """WORLD/test/instruct.jsonl with two questions of every kind (mc: 4 options -> 4 rotations each)."""
    img = "test/images/0.png"
    png(root / img)
    records = [
        _rec("c1", "color", "What color is the circle?", "red", img),
        _rec("c2", "color", "What color is the square?", "blue", img),
        _rec("s1", "shape", "What shape is red?", "circle", img),
        _rec("s2", "shape", "What shape is blue?", "square", img),
        _rec("n1", "count", "How many objects are there?", "3", img),
        _rec("n2", "count", "How many circles are there?", "1", img),
        _rec("p1", "position", "Where is the circle?", "top left", img),
        _rec("p2", "position", "Where is the square?", "center", img),
        _rec("e1", "exist", "Is there a red circle in the image?", "Yes", img),
        _rec("e2", "exist", "Is there a green star in the image?", "No", img),
        _rec("m1", "mc", "Which shape is red?\nA. circle\nB. square\nC. star\nD. triangle", "A", img,
             choices=["circle", "square", "star", "triangle"]),
        _rec("m2", "mc", "Which color is the square?", "C", img, choices=["red", "green", "blue", "gray"]),
        _rec("r1", "rec", "Give the box of the red circle.", "[0.1, 0.1, 0.4, 0.4]", img,
             boxes=[[0.1, 0.1, 0.4, 0.4]]),
        _rec("r2", "rec", "Give the box of the blue square.", "[0.5, 0.5, 0.9, 0.9]", img,
             boxes=[[0.5, 0.5, 0.9, 0.9]]),
    ]  # fmt: skip
    (root / "test").mkdir(parents=True, exist_ok=True)
    (root / "test" / "instruct.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if world_json is not None:
        (root / "world.json").write_text(json.dumps(world_json))
    return root


def _render(target) -> str:
    if isinstance(target, list) and target and isinstance(target[0], list):
        return "[" + ", ".join(f"{v:g}" for v in target[0]) + "]"
    return str(target)


class Oracle:
    """A fake Generator answering each prompt with its sample's reference answer; counts what it is asked."""

    def __init__(self, tasks, data, wrong: bool = False):
        self.answers = {}
        for task in resolve(tasks):
            for s in task.load(data):
                self.answers[s.prompt] = "Banana" if wrong else _render(s.target)
        self.calls = 0
        self.prompts: list[str] = []

    def __call__(self, requests: list[GenerationRequest]) -> list[str]:
        self.calls += len(requests)
        self.prompts += [r.prompt for r in requests]
        assert all(r.images and r.images[0].size == (8, 8) for r in requests)
        return [self.answers[r.prompt] for r in requests]


PARITY_FIXTURES = Path(__file__).parent / "fixtures" / "eval_parity"


def parity_fixture(name: str) -> dict:
    """A reference's numbers on seeded answers (tests/fixtures/eval_parity; each says how it was produced)."""
    return json.loads((PARITY_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def png_b64(color: str = "red") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_vlmevalkit_tsv(path: Path, columns: list[str], rows: list[list]) -> Path:
    """A VLMEvalKit TSV: each question's row carries the image, a circular copy (index >= 1,000,000) names the
    question whose image it reuses."""
    image = png_b64()
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, delimiter="\t")
        out.writerow([*columns, "image"])
        for row in rows:
            index = int(row[0])
            out.writerow([*row, str(index % 1_000_000) if index >= 1_000_000 else image])
    return path
