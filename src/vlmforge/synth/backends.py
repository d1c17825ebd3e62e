"""Text generation backends for data synthesis: a local HF causal LM or any OpenAI-compatible server.

Both take chat messages and return one completion per prompt. A request that still fails after the backend's
retries comes back as a ``GenerationFailure`` instead of raising, so one bad request never kills a long job; the
stage counts failures and leaves those records for the next run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from vlmforge.errors import ConfigError

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class GenerationFailure:
    """Marker for a prompt that produced no completion (after retries). ``reason`` is a short error class."""

    reason: str
    attempts: int = 1


Completion = str | GenerationFailure


class TextGenerator(Protocol):
    """The interface every backend implements. ``name`` goes into manifests (backend + model)."""

    name: str

    def generate(
        self, prompts: Sequence[Messages], *, max_new_tokens: int, temperature: float, seed: int
    ) -> list[Completion]: ...


class LocalHFGenerator:
    """Any local ``AutoModelForCausalLM``: chat template applied, batched with LEFT padding, greedy at T=0.

    Left padding keeps every prompt's last token at the end of the row, so new tokens start at the same column
    for the whole batch and can be sliced off with one index.
    """

    def __init__(self, model_path: str, *, batch_size: int = 8, device: str = "auto", dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
        except OSError as err:
            raise ConfigError(f"cannot load a causal LM from {model_path!r}: {err}") from err
        if self.tokenizer.chat_template is None:
            raise ConfigError(f"{model_path!r}: the tokenizer has no chat template; use an instruct/chat model")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size, self.device = batch_size, device
        self.name = f"local:{model_path}"

    def generate(
        self, prompts: Sequence[Messages], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Completion]:
        import torch

        texts = [self.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in prompts]
        out: list[Completion] = []
        torch.manual_seed(seed)  # sampling (T>0) is reproducible for the same batches
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,  # the chat template already wrote BOS/role tokens
            ).to(self.device)
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            with torch.inference_mode():
                ids = self.model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **sampling,
                )
            new = ids[:, batch["input_ids"].shape[1] :]
            out.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return out


class OpenAIGenerator:
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, ``vlmforge serve``), requests in parallel.

    The client's own retries are off (``max_retries=0``) so that this class owns the policy: exponential backoff
    with jitter on timeouts, connection errors, 429 and 5xx; any other error (400, 401, ...) fails at once, since
    repeating a bad request cannot help.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        concurrency: int = 16,
        max_retries: int = 4,
        timeout: float = 120.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ):
        import openai

        self._openai = openai
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self.model, self.concurrency, self.max_retries = model, max(1, concurrency), max_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.name = f"openai:{base_url}#{model}"

    def _retryable(self, err: Exception) -> bool:
        o = self._openai
        if isinstance(err, o.APITimeoutError | o.APIConnectionError | o.RateLimitError | o.InternalServerError):
            return True
        return isinstance(err, o.APIStatusError) and err.status_code >= 500

    def create(self, **request: Any) -> Any:
        """One chat completion request (``messages``, ``max_tokens``, ... as the API takes them) with this
        backend's retry policy; the response, or a ``GenerationFailure`` once retries are spent."""
        for attempt in range(self.max_retries + 1):
            try:
                return self.client.chat.completions.create(model=self.model, **request)
            except Exception as err:  # noqa: BLE001 - classified below; unknown errors fail this prompt only
                if not self._retryable(err):
                    return GenerationFailure(type(err).__name__, attempt + 1)
                if attempt == self.max_retries:
                    return GenerationFailure(type(err).__name__, attempt + 1)
                # Full jitter: spreads the retries of many threads so they do not hit the server in lockstep.
                delay = min(self.backoff_max, self.backoff_base * 2**attempt)
                time.sleep(delay * (0.5 + random.random() / 2))
        raise AssertionError("unreachable")

    def _one(self, messages: Messages, max_new_tokens: int, temperature: float, seed: int) -> Completion:
        resp = self.create(messages=messages, max_tokens=max_new_tokens, temperature=temperature, seed=seed)
        if isinstance(resp, GenerationFailure):
            return resp
        return resp.choices[0].message.content or ""

    def generate(
        self, prompts: Sequence[Messages], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(prompts)))) as pool:
            # map keeps input order, so completions line up with prompts regardless of finishing order.
            return list(pool.map(lambda m: self._one(m, max_new_tokens, temperature, seed), prompts))


def make_generator(config: dict[str, Any]) -> TextGenerator:
    """Build a backend from a config dict: ``{"backend": "local", "model": PATH, ...}`` or
    ``{"backend": "openai", "base_url": URL, "model": NAME, "api_key": ..., "concurrency": ..., ...}``."""
    cfg = dict(config)
    kind = cfg.pop("backend", None)
    if kind == "local":
        path = cfg.pop("model", None) or cfg.pop("model_path", None)
        if not path:
            raise ConfigError("the local backend needs a model path (--model PATH)")
        keys = {"batch_size", "device", "dtype"}
        return LocalHFGenerator(path, **{k: v for k, v in cfg.items() if k in keys and v is not None})
    if kind == "openai":
        if not cfg.get("base_url") or not cfg.get("model"):
            raise ConfigError("the openai backend needs --base-url and --model")
        keys = {"api_key", "concurrency", "max_retries", "timeout", "backoff_base", "backoff_max"}
        kwargs = {k: v for k, v in cfg.items() if k in keys and v is not None}
        return OpenAIGenerator(cfg["base_url"], cfg["model"], **kwargs)
    raise ConfigError(f"unknown backend {kind!r}; choose 'local' or 'openai'")


def add_backend_args(parser: Any) -> None:
    """The CLI flags shared by every generating stage; ``backend_config(args)`` turns them into a config dict."""
    g = parser.add_argument_group("generation backend")
    g.add_argument("--backend", choices=["local", "openai"], required=True, help="where completions come from")
    g.add_argument("--model", required=True, help="local: model directory; openai: the served model name")
    g.add_argument("--base-url", help="openai: endpoint, e.g. http://localhost:8000/v1 (vLLM, SGLang)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="openai: env variable holding the key")
    g.add_argument("--concurrency", type=int, default=16, help="openai: parallel requests")
    g.add_argument("--max-retries", type=int, default=4, help="openai: retries on timeout/429/5xx")
    g.add_argument("--timeout", type=float, default=120.0, help="openai: seconds per request")
    g.add_argument("--batch-size", type=int, default=32, help="records per batch (and per saved chunk)")
    g.add_argument("--max-new-tokens", type=int, default=1024)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--seed", type=int, default=0)


def backend_config(args: Any) -> dict[str, Any]:
    import os

    return {
        "backend": args.backend,
        "model": args.model,
        "base_url": args.base_url,
        "api_key": os.environ.get(args.api_key_env, "EMPTY"),
        "concurrency": args.concurrency,
        "max_retries": args.max_retries,
        "timeout": args.timeout,
        "batch_size": args.batch_size,
    }
