"""Where generated text comes from when the prompt has an image: a local checkpoint or an OpenAI-compatible server.

The text-only backends (``synth/backends.py``) take chat messages; these take ``(image, prompt)`` requests. The
local one goes through ``runtime.VisionLanguageModel`` (any llava-hf layout checkpoint); the server one sends the
image inline as a data URL, as vLLM and SGLang accept it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from vlmforge.errors import ConfigError
from vlmforge.synth.backends import Completion, GenerationFailure, OpenAIGenerator

Request = tuple[Image.Image, str]


class VisionGenerator(Protocol):
    name: str

    def generate(
        self, requests: Sequence[Request], *, max_new_tokens: int, temperature: float, seed: int
    ) -> list[Completion]: ...


def model_identity(backend: Any) -> dict[str, Any]:
    """What a generator's or judge's outputs depend on: a local checkpoint's file identity (retrained in place, it
    is another model), else the backend's name (an endpoint's model is its server's business)."""
    return getattr(backend, "identity", None) or {"kind": "name", "name": backend.name}


def model_dir(name_or_path: str) -> str:
    """A local checkpoint folder as is; a hub id (``llava-hf/llava-1.5-7b-hf``) fetched into, or found in, the
    Hugging Face cache, since the runtime loads folders."""
    if Path(name_or_path).is_dir():
        return name_or_path
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name_or_path)
    except (OSError, ValueError) as err:  # hub HTTP, offline-cache and id-validation errors all derive from these
        raise ConfigError(
            f"model {name_or_path!r} is neither a local folder nor a hub id that can be fetched: {err}"
        ) from err


def image_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_messages(image: Image.Image, prompt: str) -> list[dict[str, Any]]:
    content = [{"type": "image_url", "image_url": {"url": image_data_url(image)}}, {"type": "text", "text": prompt}]
    return [{"role": "user", "content": content}]


class LocalVisionGenerator:
    """A local checkpoint, batched and left-padded by the runtime; sampling seeded per call."""

    def __init__(self, model_path: str, *, batch_size: int = 8, device: str | None = None):
        from vlmforge.provenance import path_identity
        from vlmforge.runtime import VisionLanguageModel

        folder = model_dir(model_path)
        self.vlm = VisionLanguageModel.from_pretrained(folder, device=None if device == "auto" else device)
        self.batch_size, self.name, self.identity = batch_size, f"local:{model_path}", path_identity(folder)

    def generate(
        self, requests: Sequence[Request], *, max_new_tokens: int, temperature: float = 0.2, seed: int = 0
    ) -> list[Completion]:
        from vlmforge.runtime import Conversation, SamplingParams

        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        out: list[Completion] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            conversations = [Conversation.single_turn(prompt, [image]) for image, prompt in chunk]
            out += [c.text for c in self.vlm.generate(conversations, params)]
        return out


class OpenAIVisionGenerator:
    """Any OpenAI-compatible endpoint serving a VLM; requests in parallel with the text backend's retries."""

    def __init__(self, base_url: str, model: str, **kwargs: Any):
        self.client = OpenAIGenerator(base_url, model, **kwargs)
        self.name = self.client.name

    def _one(self, request: Request, max_new_tokens: int, temperature: float, seed: int) -> Completion:
        messages = image_messages(*request)
        resp = self.client.create(messages=messages, max_tokens=max_new_tokens, temperature=temperature, seed=seed)
        return resp if isinstance(resp, GenerationFailure) else (resp.choices[0].message.content or "")

    def generate(
        self, requests: Sequence[Request], *, max_new_tokens: int, temperature: float = 0.2, seed: int = 0
    ) -> list[Completion]:
        workers = min(self.client.concurrency, max(1, len(requests)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda r: self._one(r, max_new_tokens, temperature, seed), requests))


def make_vision_generator(config: dict[str, Any]) -> VisionGenerator:
    """``{"backend": "local", "model": DIR, "batch_size", "device"}`` or ``{"backend": "openai", "base_url",
    "model", "api_key", "concurrency", "max_retries", "timeout"}`` (``synth.backends.backend_config``'s dict)."""
    cfg = {k: v for k, v in config.items() if v is not None}
    kind = cfg.pop("backend", None)
    if kind == "local":
        return LocalVisionGenerator(cfg["model"], batch_size=cfg.get("batch_size", 8), device=cfg.get("device"))
    if kind == "openai":
        if not cfg.get("base_url"):
            raise ConfigError("the openai backend needs --base-url")
        keys = ("api_key", "concurrency", "max_retries", "timeout")
        return OpenAIVisionGenerator(cfg["base_url"], cfg["model"], **{k: cfg[k] for k in keys if k in cfg})
    raise ConfigError(f"unknown backend {kind!r}; choose 'local' or 'openai'")
