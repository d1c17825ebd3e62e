"""Test doubles for the synthesis tests: a scripted in-process backend and a local OpenAI-compatible server.

Both answer deterministically from the prompt, so two runs over the same input write the same bytes. Markers in
a caption select a behaviour: ``[BADJSON]`` always malformed, ``[FLAKY]`` malformed at seed 0 only, ``[MC3]``
multiple choice with only 3 options, ``[SLOW]`` first request sleeps past the client timeout, ``[500]`` first
request answers HTTP 500, ``[DOWN]`` always 503.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from typing import Any

from vlmforge.synth.backends import GenerationFailure


def _caption_of(prompt: str) -> str:
    m = re.search(r"Caption: (.*)$", prompt, re.S) or re.search(r"image:\n\n(.*?)\n\nWrite", prompt, re.S)
    return m.group(1).strip() if m else prompt


def answer(messages: list[dict[str, Any]], seed: int) -> str:
    """The deterministic 'LLM': a paragraph for densify prompts, QA JSON for instruct prompts."""
    prompt = messages[-1]["content"]
    caption = _caption_of(prompt)
    if "Caption:" in prompt:
        return f"The main subject is shown clearly: {caption}. Its colours, shapes and position are plain to see."
    if "[BADJSON]" in caption or ("[FLAKY]" in caption and seed == 0):
        return '{"qa": [{"question": "what is it?", "answer": '  # cut off mid-object
    tag = hashlib.sha1(caption.encode()).hexdigest()[:6]
    if '"options"' in prompt:
        n_opts = 3 if "[MC3]" in caption else 4
        qa = [
            {
                "question": f"Question {i} about {tag}?",
                "options": dict(zip("ABCD"[:n_opts], [f"opt{i}{k}" for k in "wxyz"], strict=False)),
                "answer": "ABCD"[i % 4],
            }
            for i in range(7)
        ]
    else:
        qa = [{"question": f"Question {i} about {tag}?", "answer": f"Answer {i}."} for i in range(7)]
        qa.append(dict(qa[0]))  # a repeated question the parser must drop
    return "Sure! Here is the JSON:\n```json\n" + json.dumps({"qa": qa}) + "\n```"


class ScriptedGenerator:
    """In-process backend: ``answer`` unless ``fail_ids`` marks a caption as a generation failure."""

    name = "scripted"

    def __init__(self, fail_markers: tuple[str, ...] = ()):
        self.fail_markers, self.calls = fail_markers, []

    def generate(self, prompts, *, max_new_tokens, temperature, seed):
        self.calls.append((len(prompts), seed))
        out = []
        for messages in prompts:
            if any(m in messages[-1]["content"] for m in self.fail_markers):
                out.append(GenerationFailure("ScriptedFailure"))
            else:
                out.append(answer(messages, seed))
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hold:
    """Lets the first ``after`` requests through and holds the rest until ``release`` is set, so a test can kill
    its client mid-run whatever the machine's speed (``after`` None: holds nothing)."""

    def __init__(self, after: int | None = None):
        self.after, self.seen = after, 0
        self.release = threading.Event()
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            self.seen += 1
            held = self.after is not None and self.seen > self.after
        if held:
            self.release.wait(timeout=300)  # a bound only so a broken test cannot hang the fake forever


class ThreadedServer:
    """Serves ``self.app`` (set by the subclass) with uvicorn on a free local port in a daemon thread, as a context
    manager; ``base_url`` is its OpenAI-style root."""

    app: Any

    def __enter__(self):
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.02)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class FakeOpenAIServer(ThreadedServer):
    """FastAPI ``/v1/chat/completions`` on 127.0.0.1 in a uvicorn thread. ``delay``: seconds per request;
    ``hold_after``: requests past this many wait until ``release`` is set (a client held mid-run)."""

    def __init__(self, delay: float = 0.0, slow_seconds: float = 1.5, hold_after: int | None = None):
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse

        self.delay, self.slow_seconds = delay, slow_seconds
        self.hits: Counter = Counter()  # (caption, seed) -> requests seen
        self.lock = threading.Lock()
        self.hold = Hold(hold_after)
        app = FastAPI()

        @app.post("/v1/chat/completions")
        def complete(body: dict[str, Any]):  # sync: FastAPI runs it in a thread pool, so sleeps overlap
            messages, seed = body["messages"], int(body.get("seed") or 0)
            caption = _caption_of(messages[-1]["content"])
            with self.lock:
                self.hits[(caption, seed)] += 1
                first = self.hits[(caption, seed)] == 1
            self.hold.wait()
            time.sleep(self.delay)
            if "[DOWN]" in caption:
                return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
            if "[500]" in caption and first:
                return JSONResponse({"error": {"message": "boom"}}, status_code=500)
            if "[SLOW]" in caption and first:
                time.sleep(self.slow_seconds)
            content = answer(messages, seed)
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }

        self.app = app
