"""A fake OpenAI-compatible VLM server for the Genixer tests: it writes a valid sample for the task its prompt
names, and answers a judge's one-token request with Yes/No logprobs. Deterministic in the prompt and image, so two
runs over the same input write the same bytes."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from typing import Any

from synth_fakes import Hold, ThreadedServer

B1, B2 = "[0.100,0.100,0.500,0.600]", "[0.600,0.550,0.950,0.900]"
TINY = "[0.100,0.100,0.110,0.120]"
SAMPLES = {
    "Common VQA": "Question: What colour is the circle? Answer: red",
    "Adversarial VQA": "Question: Is there a dog in the image? Answer: No",
    "Multiple-choice": "Question: What shape is red?\nA. circle\nB. star Answer: A",
    "Multi-turn Dialogue": "Question: How many objects? Answer: 2 Question: Which is red? Answer: the circle",
    "Referring Expression Comprehension": f"Question: the red circle Answer: {B1}",
    "Referring Expression Generation": f"Question: What is in {TINY}? Answer: a tiny dot",
    "PointQA": f"Question: Which holds the star? {B1};{B2} Answer: {B2}",
    "Q-to-C^Box-A": f"Question: Is the circle left of the star? Answer: The circle {B1} is left of the star {B2}; Yes",
    "Referential Dialogue": f"Question: What is at {B1}? Answer: a circle Question: Where is the star? Answer: {B2}",
}


def sample_for(prompt: str, digest: str) -> str:
    if int(digest[:2], 16) < 40:  # about one in six: malformed, as a real generator sometimes is
        return "Question: what is this?" if int(digest[2], 16) % 2 else "I see a picture."
    for name, text in SAMPLES.items():
        if name in prompt:
            return text
    return SAMPLES["Common VQA"]  # task-agnostic


class FakeVisionServer(ThreadedServer):
    """``/v1/chat/completions`` on 127.0.0.1 in a uvicorn thread; ``delay`` seconds per request; ``hold_after``:
    requests past this many wait until ``hold.release`` is set."""

    def __init__(self, delay: float = 0.0, hold_after: int | None = None):
        from fastapi import FastAPI

        self.delay, self.requests, self.lock = delay, 0, threading.Lock()
        self.hold = Hold(hold_after)
        app = FastAPI()

        @app.post("/v1/chat/completions")
        def complete(body: dict[str, Any]):
            parts = body["messages"][-1]["content"]
            prompt = next(p["text"] for p in parts if p["type"] == "text")
            image = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
            digest = hashlib.sha256((prompt + image).encode()).hexdigest()
            with self.lock:
                self.requests += 1
            self.hold.wait()
            time.sleep(self.delay)
            if body.get("logprobs"):
                p = 0.05 + 0.9 * int(digest[:4], 16) / 0xFFFF
                top = [{"token": "Yes", "logprob": math.log(p)}, {"token": "No", "logprob": math.log(1 - p)}]
                logprobs = {"content": [{"token": "Yes", "logprob": math.log(p), "top_logprobs": top}]}
                content = "Yes"
            else:
                content, logprobs = sample_for(prompt, digest), None
            choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            choice["logprobs"] = logprobs
            return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice]}

        self.app = app
