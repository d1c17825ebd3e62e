"""`vlmforge chat`: ask a checkpoint about an image, once or in a streaming REPL — locally or via a server.

vlmforge chat --model DIR --image shapes.png "What color is the circle?"
vlmforge chat --model DIR --image shapes.png        # REPL: /image PATH, /reset, Ctrl-D quits
vlmforge chat --server http://127.0.0.1:8000 --image shapes.png "How many shapes are there?"
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vlmforge.errors import ConfigError, DataError, VlmforgeError

API_KEY_ENV = "VLMFORGE_API_KEY"
DEFAULT_MAX_TOKENS = 512  # cut to the room the conversation leaves in the model's context
REPL_HELP = "type a question; /image PATH attaches an image to your next question, /reset starts over, Ctrl-D quits"


@dataclass
class Turn:
    role: str  # "user" or "assistant"
    text: str
    images: list = field(default_factory=list)  # PIL images, shown before the text


@dataclass
class Settings:
    max_tokens: int | None = None  # None: DEFAULT_MAX_TOKENS, or less where the context leaves less
    temperature: float = 0.0  # greedy by default: the same question gets the same answer
    top_p: float = 1.0


class LocalChat:
    """Generates with a checkpoint loaded in this process."""

    def __init__(self, model_dir: str, device: str | None = None):
        from vlmforge.runtime import VisionLanguageModel

        self.vlm = VisionLanguageModel.from_pretrained(model_dir, device=device)

    def stream(self, turns: list[Turn], settings: Settings) -> Iterator[str]:
        from vlmforge.runtime import Conversation, SamplingParams
        from vlmforge.serve.streaming import StreamText

        messages = [
            {"role": t.role, "content": [{"type": "image"} for _ in t.images] + [{"type": "text", "text": t.text}]}
            for t in turns
        ]
        conversation = Conversation(messages, [image for t in turns for image in t.images])
        max_tokens = self.vlm.answer_budget(conversation, settings.max_tokens, DEFAULT_MAX_TOKENS)
        params = SamplingParams(max_new_tokens=max_tokens, temperature=settings.temperature, top_p=settings.top_p)
        text = StreamText()  # the same whitespace rule as the server, so both print the same answer
        for (delta,) in self.vlm.stream([conversation], params):
            if released := text.feed(delta):
                yield released
        if released := text.finish():
            yield released


class RemoteChat:
    """Talks to an OpenAI-compatible server (vlmforge serve, vLLM, ...) with the official client."""

    def __init__(self, url: str, api_key: str | None, model: str | None = None):
        import openai

        base = url.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        self.client = openai.OpenAI(base_url=base, api_key=api_key or "none")
        try:
            self.model = model or self.client.models.list().data[0].id
        except openai.APIError as err:
            raise ConfigError(f"cannot use the server at {base}: {err}") from err

    def stream(self, turns: list[Turn], settings: Settings) -> Iterator[str]:
        messages = [
            {
                "role": t.role,
                "content": [{"type": "image_url", "image_url": {"url": _data_url(i)}} for i in t.images]
                + [{"type": "text", "text": t.text}],
            }
            for t in turns
        ]
        import openai

        try:
            chunks = self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                stream=True,
                max_tokens=openai.NOT_GIVEN if settings.max_tokens is None else settings.max_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
            )
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except openai.APIError as err:
            raise VlmforgeError(f"the server refused the request: {err}") from err


def _data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # lossless: the server sees exactly the pixels the local path would
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def open_image(path: str | Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(str(path), f"cannot read the image ({err.__class__.__name__})", "bad_image") from err


def answer(backend, turns: list[Turn], settings: Settings, out=None) -> str:
    """Print the answer as it streams in; return it."""
    out = out or sys.stdout
    pieces = []
    for piece in backend.stream(turns, settings):
        pieces.append(piece)
        out.write(piece)
        out.flush()
    out.write("\n")
    return "".join(pieces)


def repl(backend, settings: Settings, images: list, lines=None, out=None) -> None:
    """Read questions line by line, keep the conversation, stream each answer."""
    lines = lines if lines is not None else sys.stdin
    interactive = lines is sys.stdin and sys.stdin.isatty()
    history: list[Turn] = []
    pending = list(images)
    if interactive:
        print(REPL_HELP, file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = lines.readline()
        if not line:  # EOF
            return
        line = line.strip()
        if not line:
            continue
        if line == "/reset":
            history, pending = [], []
            print("(conversation cleared)", file=sys.stderr)
        elif line.startswith("/image"):
            try:
                pending.append(open_image(line[len("/image") :].strip()))
                print("(image attached to your next question)", file=sys.stderr)
            except DataError as err:
                print(f"error: {err}", file=sys.stderr)
        elif line.startswith("/"):
            print(REPL_HELP, file=sys.stderr)
        else:
            history.append(Turn("user", line, pending))
            pending = []
            try:
                history.append(Turn("assistant", answer(backend, history, settings, out)))
            except VlmforgeError as err:  # e.g. a conversation grown past the context: the REPL goes on
                print(f"error: {err}", file=sys.stderr)
                pending = history.pop().images


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="ask a checkpoint about an image (one question, or a REPL)",
        description=(
            "Ask a trained checkpoint about an image. With a question, prints the answer (greedy unless "
            "--temperature is set). Without one, starts a REPL that keeps the conversation: /image PATH attaches "
            "an image to the next question, /reset starts over, Ctrl-D quits. With --server, asks a running "
            "OpenAI-compatible server (vlmforge serve, vLLM) instead of loading the model here."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint folder to load in this process")
    source.add_argument("--server", help="URL of a running server, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV), help=f"the server's API key (default: ${API_KEY_ENV})"
    )
    parser.add_argument("--server-model", help="model id on the server (default: the first one it lists)")
    parser.add_argument("--image", help="image to ask about (attached to the first question)")
    parser.add_argument("question", nargs="?", help="the question; leave out for the REPL")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: %(default)s)")
    parser.add_argument(
        "--max-tokens",
        type=int,
        help=f"longest answer in tokens; the conversation and it must fit the model's context (default: "
        f"{DEFAULT_MAX_TOKENS}, or what the context leaves; with --server, the server's default)",
    )
    parser.add_argument("--device", help="torch device for --model (default: cuda if available)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if (args.max_tokens is not None and args.max_tokens < 1) or args.temperature < 0 or not 0 < args.top_p <= 1:
        raise ConfigError("need --max-tokens >= 1, --temperature >= 0 and 0 < --top-p <= 1")
    images = [open_image(args.image)] if args.image else []
    settings = Settings(args.max_tokens, args.temperature, args.top_p)
    if args.server:
        backend = RemoteChat(args.server, args.api_key, args.server_model)
    else:
        backend = LocalChat(args.model, args.device)
    if args.question:
        answer(backend, [Turn("user", args.question, images)], settings)
    else:
        repl(backend, settings, images)
    return 0
