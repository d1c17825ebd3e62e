"""Test support for the serving tests: a tiny LLaVA that says something, images, a fake engine."""

from __future__ import annotations

import base64
import io
import shutil
import string
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlmforge.runtime import Completion, Conversation

PLAIN = set(string.ascii_letters + string.digits + " .,?!'")


def make_chatty(base: Path, out: Path, seed: int = 0) -> Path:
    """Copy a tiny random LLaVA and shake its weights so greedy answers are varied, image-dependent ASCII.

    The plain random init repeats one token (often a newline, stripped to ''), which would make "the server's
    answer equals the runtime's" true for any server. Tokens other than end-of-turn and plain words (letters,
    digits, spaces, simple punctuation) are suppressed, so answers read the same in a terminal and a browser.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(base)
    processor = AutoProcessor.from_pretrained(base)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    tok = processor.tokenizer
    keep = {tok.eos_token_id}
    suppress = [
        i for i in range(len(tok)) if i not in keep and (i in tok.all_special_ids or not set(tok.decode([i])) <= PLAIN)
    ]
    model.generation_config.suppress_tokens = suppress
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def chatty_llava(tiny_llava, tmp_path_factory):
    return make_chatty(Path(tiny_llava), tmp_path_factory.mktemp("chatty") / "chatty-llava")


@pytest.fixture(scope="session")
def vlm(chatty_llava):
    from vlmforge.runtime import VisionLanguageModel

    return VisionLanguageModel.from_pretrained(chatty_llava)


def image(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, color)


def data_url(img: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def user_message(text: str, *images: Image.Image) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": data_url(i)}} for i in images]
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def words_for(vlm, room: int, img: Image.Image) -> str:
    """A question whose prompt (with ``img``) leaves exactly ``room`` tokens of the context."""
    target = vlm.context - room
    words = 1
    while vlm.prompt_length(Conversation.single_turn("red " * words, [img])) < target:
        words += 1
    text = "red " * words
    assert vlm.prompt_length(Conversation.single_turn(text, [img])) == target, "one word is one token here"
    return text


class FakeEngine:
    """Answers instantly (or when released): for tests of the HTTP layer, not of the model."""

    name = "fake"

    def __init__(self, block: bool = False):
        self.release = threading.Event()
        if not block:
            self.release.set()
        self.started = threading.Event()

    def _answer(self, conversation) -> str:
        return f"{len(conversation.images)} image(s), {len(conversation.messages)} message(s)"

    def generate(self, conversations, params):
        self.started.set()
        self.release.wait(timeout=30)
        return [Completion(self._answer(c), 5, 3, "stop") for c in conversations]

    def stream(self, conversations, params):
        self.started.set()
        self.release.wait(timeout=30)
        answers = [self._answer(c) for c in conversations]
        for word in range(max(len(a.split(" ")) for a in answers)):
            yield [(" " if word else "") + a.split(" ")[word] if word < len(a.split(" ")) else "" for a in answers]
