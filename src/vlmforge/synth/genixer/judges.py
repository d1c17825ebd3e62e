"""Judge backends: a local checkpoint (scores from its logits) or an OpenAI-compatible server (from logprobs).

Both answer ``p_yes(items)`` and ``released(items, seed)`` for ``(image, prompt)`` items, one result per item:
``(score, None)`` or ``(None, reason)``; a server request that failed after retries is a ``GenerationFailure``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from vlmforge.synth.backends import GenerationFailure, OpenAIGenerator
from vlmforge.synth.genixer.backends import image_messages, model_dir
from vlmforge.synth.genixer.judge import (
    RELEASED_SAMPLING,
    p_yes_from_logits,
    p_yes_from_logprobs,
    released_score,
    single_token_ids,
)

Item = tuple[Image.Image, str]
Score = tuple[float | None, str | None]


class LocalJudge:
    """Any local llava-hf layout checkpoint. p_yes: one batched forward pass, the last position's logits."""

    def __init__(self, model_path: str, *, batch_size: int = 8, device: str | None = None):
        from vlmforge.provenance import path_identity
        from vlmforge.runtime import VisionLanguageModel

        folder = model_dir(model_path)
        self.vlm = VisionLanguageModel.from_pretrained(folder, device=None if device == "auto" else device)
        self.batch_size, self.name, self.identity = batch_size, f"local:{model_path}", path_identity(folder)
        self._yes_no: list[list[int]] | None = None

    def yes_no_ids(self) -> list[list[int]]:
        """Checked once: "Yes" and "No" must each be a single first token after the judge's template."""
        if self._yes_no is None:
            from vlmforge.runtime import Conversation

            messages = Conversation.single_turn("Is it true?", [Image.new("RGB", (8, 8))]).messages
            text = self.vlm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            self._yes_no = single_token_ids(self.vlm.tokenizer, text)
        return self._yes_no

    def _inputs(self, chunk: Sequence[Item]) -> dict[str, Any]:
        from vlmforge.runtime import Conversation

        return self.vlm.prepare([Conversation.single_turn(prompt, [image]) for image, prompt in chunk])

    def p_yes(self, items: Sequence[Item]) -> list[Score]:
        import torch

        yes_id, no_id = self.yes_no_ids()
        out: list[Score] = []
        for start in range(0, len(items), self.batch_size):
            inputs = self._inputs(items[start : start + self.batch_size])
            # Left padding: positions count real tokens only, as generate() would number them.
            positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                # No cache: nothing is generated after this pass, so building one would be wasted work.
                out_logits = self.vlm.model(**inputs, position_ids=positions, logits_to_keep=1, use_cache=False)
                logits = out_logits.logits[:, -1, :]
            out += [(float(p), None) for p in p_yes_from_logits(logits, yes_id, no_id)]
        return out

    def released(self, items: Sequence[Item], seed: int = 0, max_new_tokens: int | None = None) -> list[Score]:
        """The released score of a sampled answer per item (``max_new_tokens``: the released 10 by default)."""
        import torch

        tok = self.vlm.tokenizer
        sampling = {**RELEASED_SAMPLING, **({"max_new_tokens": max_new_tokens} if max_new_tokens else {})}
        out: list[Score] = []
        for start in range(0, len(items), self.batch_size):
            inputs = self._inputs(items[start : start + self.batch_size])
            torch.manual_seed(seed + start)
            with torch.inference_mode():
                gen = self.vlm.model.generate(
                    **inputs,
                    **sampling,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                    return_dict_in_generate=True,
                    output_scores=True,
                )
                logp = self.vlm.model.compute_transition_scores(gen.sequences, gen.scores, normalize_logits=True)
            new = gen.sequences[:, inputs["input_ids"].shape[1] :].tolist()
            for row, lp in zip(new, logp.tolist(), strict=True):
                # The released code scored the whole sampled answer, its end-of-sequence token included.
                n = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
                out.append(released_score([math.exp(v) for v in lp[:n]]))
        return out


class OpenAIJudge:
    """An OpenAI-compatible server with logprobs (vLLM, SGLang). p_yes: one token, its ``top_logprobs``."""

    def __init__(self, base_url: str, model: str, *, top_logprobs: int = 20, **kwargs: Any):
        self.client = OpenAIGenerator(base_url, model, **kwargs)
        self.top_logprobs, self.name = top_logprobs, self.client.name

    def _map(self, fn, items: Sequence[Item]) -> list:
        with ThreadPoolExecutor(max_workers=min(self.client.concurrency, max(1, len(items)))) as pool:
            return list(pool.map(fn, items))

    def _p_yes_one(self, item: Item) -> Score | GenerationFailure:
        resp = self.client.create(
            messages=image_messages(*item), max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=self.top_logprobs
        )
        if isinstance(resp, GenerationFailure):
            return resp
        content = resp.choices[0].logprobs.content if resp.choices[0].logprobs else None
        if not content:
            return None, "no_logprobs"
        return p_yes_from_logprobs({t.token: t.logprob for t in content[0].top_logprobs})

    def p_yes(self, items: Sequence[Item]) -> list[Score | GenerationFailure]:
        return self._map(self._p_yes_one, items)

    def released(self, items: Sequence[Item], seed: int = 0) -> list[Score | GenerationFailure]:
        def one(item: Item) -> Score | GenerationFailure:
            resp = self.client.create(
                messages=image_messages(*item),
                max_tokens=RELEASED_SAMPLING["max_new_tokens"],
                temperature=1.0,
                top_p=RELEASED_SAMPLING["top_p"],
                logprobs=True,
                seed=seed,
            )
            if isinstance(resp, GenerationFailure):
                return resp
            content = resp.choices[0].logprobs.content if resp.choices[0].logprobs else None
            return released_score([math.exp(t.logprob) for t in content or []])

        return self._map(one, items)


def make_judge(config: dict[str, Any]) -> LocalJudge | OpenAIJudge:
    """The judge a backend config names (the same keys as ``genixer.backends.make_vision_generator``)."""
    from vlmforge.errors import ConfigError

    cfg = {k: v for k, v in config.items() if v is not None}
    kind = cfg.pop("backend", None)
    if kind == "local":
        return LocalJudge(cfg["model"], batch_size=cfg.get("batch_size", 8), device=cfg.get("device"))
    if kind == "openai":
        if not cfg.get("base_url"):
            raise ConfigError("the openai judge needs --base-url")
        keys = ("api_key", "concurrency", "max_retries", "timeout", "top_logprobs")
        return OpenAIJudge(cfg["base_url"], cfg["model"], **{k: cfg[k] for k in keys if k in cfg})
    raise ConfigError(f"unknown backend {kind!r}; choose 'local' or 'openai'")
