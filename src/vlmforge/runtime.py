"""Load a trained checkpoint and generate from it: batched, left-padded, optionally streamed.

One runtime serves `vlmforge chat`, `vlmforge eval` and `vlmforge serve`. It goes through the Auto classes
(``AutoModelForImageTextToText`` + ``AutoProcessor``), so any model type registered with them — plain LLaVA, and
vlmforge's own embedding-input model — takes the same path. A unified (Uni-X) model folder loads its causal LM
with a processor that turns images into its image tokenizer's codes (``models.unified.chat_processor``), and
can also draw images (``generate_images``).
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from queue import Queue
from typing import Any

import torch
import yaml
from PIL import Image
from transformers.generation.streamers import BaseStreamer

from vlmforge.context import answer_budget
from vlmforge.data.chat import fixed_image_tokens
from vlmforge.errors import ConfigError
from vlmforge.stage_clock import Observer, StageClocks


@dataclass
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None


@dataclass
class Conversation:
    """Chat messages in the transformers content-part format plus the images they reference, in order."""

    messages: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)

    @classmethod
    def single_turn(cls, prompt: str, images: Sequence[Image.Image] = ()) -> Conversation:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        return cls([{"role": "user", "content": content}], list(images))


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn / stop string) or "length"


def run_name(path: str | Path) -> str:
    """The name a user knows a model by: its folder's name, except for a stage's output of `vlmforge train`
    (RUN/STAGE/final, RUN/STAGE/checkpoint-N), which is named after its run: RUN for the recipe's last stage,
    RUN-STAGE for an earlier one, with -checkpoint-N appended for a checkpoint."""
    path = Path(path).absolute()
    if path.name != "final" and not re.fullmatch(r"checkpoint-\d+", path.name):
        return path.name
    stage_dir, run_dir = path.parent, path.parent.parent
    try:
        stages = list((yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}).get("stages") or {})
    except (OSError, yaml.YAMLError, AttributeError):
        stages = []
    if not stages:  # no recipe beside it: a stage's folder holds its manifest, any other folder names the model
        base = run_dir.name if (stage_dir / "manifest.json").is_file() else stage_dir.name
    else:
        base = run_dir.name if stages[-1] == stage_dir.name else f"{run_dir.name}-{stage_dir.name}"
    return base if path.name == "final" else f"{base}-{path.name}"


def _pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class VisionLanguageModel:
    """A loaded checkpoint and its processor, with batched generation."""

    def __init__(self, model, processor, path: str = ""):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"  # generation appends on the right, so prompts align on the right
        self.name = run_name(path) if path else type(model).__name__
        self._lock = threading.Lock()  # one generate at a time per model; batching happens above this layer
        self.observer: Observer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._clocks: StageClocks | None = None
        self._streamed: tuple[list[int], list[int]] = ([], [])  # ids of the last stream's conversations, their lengths
        self._counter: Any = None  # prompt_length's own tokenizer, see there
        # Tokens per image when every image takes the same number whatever its pixels, else None; found here, before
        # ``observe`` can time the image processor, because finding it may process a blank image.
        self.image_tokens: int | None = fixed_image_tokens(processor)
        self._counter_lock = threading.Lock()

    @property
    def clocks(self) -> StageClocks | None:
        """The stage clocks ``observe`` attached, for decode loops other than ``generate`` (serve's continuous
        batching) to read the vision tower's time from."""
        return self._clocks

    def observe(self, observer: Observer | None) -> None:
        """Tell ``observer`` each batch's seconds per stage (see vlmforge.stage_clock); None stops it."""
        if self._clocks is not None:
            self._clocks.detach()
        self.observer = observer
        self._clocks = StageClocks(self.model, self.processor, observer) if observer else None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, dtype: str | None = None):
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        from vlmforge.models import register_models
        from vlmforge.models.unified.configuration import MODEL_TYPE as UNIFIED_MODEL_TYPE

        register_models()  # vlmforge's own model types load through the Auto classes too

        path = Path(path)
        if not (path / "config.json").exists():
            raise ConfigError(f"model '{path}' not found: expected a folder with config.json (a trained checkpoint)")
        target = _pick_device(device)
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if target.type == "cuda" else torch.float32)
        if AutoConfig.from_pretrained(path).model_type == UNIFIED_MODEL_TYPE:
            # a unified model reads images as codes of its own image tokenizer, not through a vision tower
            from vlmforge.models.unified.chat_processor import load_for_chat

            model, processor = load_for_chat(path, torch_dtype)
            return cls(model.to(target), processor, str(path))
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype).to(target)
        return cls(model, AutoProcessor.from_pretrained(path), str(path))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare(self, conversations: Sequence[Conversation]) -> dict[str, torch.Tensor]:
        """Render each conversation with the chat template and batch them, left-padded."""
        start = time.perf_counter()
        texts = [
            self.processor.apply_chat_template(conv.messages, add_generation_prompt=True, tokenize=False)
            for conv in conversations
        ]
        images = [image for conv in conversations for image in conv.images]
        rendered = time.perf_counter()
        inputs = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        if self._clocks:
            self._clocks.prepared(rendered - start, time.perf_counter() - rendered)
        return {k: v.to(self.device) for k, v in inputs.items()}

    def check(self, conversation: Conversation, prompt_tokens: int | None = None) -> None:
        """Refuse, before it is batched, a conversation the model cannot take (a unified model's prompt longer
        than its context, or holding a token only images may bring); models whose processor has no such check take
        every conversation. ``prompt_tokens``: its ``prompt_length``, when the caller has counted it."""
        check = getattr(self.processor, "check_conversation", None)
        if check is not None:
            check(conversation.messages, len(conversation.images), prompt_tokens)

    @property
    def context(self) -> int | None:
        """The language model's context in tokens (its ``max_position_embeddings``); None when its config has none."""
        return getattr(self.model.config.get_text_config(decoder=True), "max_position_embeddings", None)

    @property
    def counts_pixels(self) -> bool:
        """Whether ``prompt_length`` has to process a conversation's images to count it: only where an image's
        token count depends on the image (an any-resolution processor); otherwise their number alone is read."""
        return not hasattr(self.processor, "prompt_length") and self.image_tokens is None

    def prompt_length(self, conversation: Conversation) -> int:
        """The conversation's prompt in tokens, images expanded, counted from the number of its images unless
        ``counts_pixels`` (then its images are processed as for generating)."""
        own = getattr(self.processor, "prompt_length", None)
        if own is not None:
            return own(conversation.messages, len(conversation.images))
        if conversation.images and self.counts_pixels:
            return self.prompt_tokens([conversation])[0]
        text = self.processor.apply_chat_template(conversation.messages, add_generation_prompt=True, tokenize=False)
        with self._counter_lock:
            # A copy of the tokenizer: the server counts on its event loop while the worker tokenizes padded
            # batches, and a fast tokenizer's padding setting is state that each call may switch under the other.
            self._counter = self._counter or copy.deepcopy(self.tokenizer)
            placeholders = len(self._counter(text)["input_ids"])  # each image one placeholder token here
        return placeholders + len(conversation.images) * ((self.image_tokens or 1) - 1)

    @property
    def mixed_lengths(self) -> bool:
        """Whether a batch may run rows past their own ``max_new_tokens`` and context (``generate``'s ``lengths``):
        rotary positions are computed for any position, a learned position table would be indexed past its end."""
        return any(type(module).__name__.endswith("RotaryEmbedding") for module in self.model.modules())

    def answer_budget(self, conversation: Conversation, requested: int | None, default: int) -> int:
        """``max_new_tokens`` for ``conversation``: ``requested`` if the prompt and it fit the model's context (else
        a ContextLengthError naming both), or with none requested ``default`` cut to the room the prompt leaves.
        Then ``check`` runs on the same count (second: every model words a too-long prompt alike)."""
        prompt_tokens = self.prompt_length(conversation)
        budget = answer_budget(self.context, prompt_tokens, requested, default)
        self.check(conversation, prompt_tokens)
        return budget

    @property
    def draws_images(self) -> bool:
        return hasattr(self.processor, "draw")

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the images ``generate_images`` draws."""
        if not self.draws_images:
            raise ConfigError(f"model '{self.name}' cannot draw images: only unified (Uni-X) models do")
        return self.processor.image_size

    def generate_images(self, prompts: Sequence[str], sampling) -> list[Image.Image]:
        """One image per prompt from a model that draws (``draws_images``); ``sampling`` is the unified model's
        ``ImageSampling``."""
        if not self.draws_images:
            raise ConfigError(f"model '{self.name}' cannot draw images: only unified (Uni-X) models do")
        self.processor.check_drawing(prompts, sampling)
        with self._lock, torch.inference_mode():
            return self.processor.draw(self.model, prompts, sampling)

    def _run_generate(self, inputs: dict[str, torch.Tensor], params: SamplingParams, streamer=None) -> torch.Tensor:
        with self._lock, torch.inference_mode():
            clocks = self._clocks
            clock = clocks.step_clock(streamer) if clocks else None
            if params.seed is not None:
                torch.manual_seed(params.seed)
            start = time.perf_counter()
            output = self.model.generate(**inputs, **self._generate_kwargs(params), streamer=clock or streamer)
            if clocks and clock:
                clocks.report(clock, time.perf_counter() - start)
        return output

    def _generate_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        return kwargs

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams | None = None,
        lengths: Sequence[int] | None = None,
    ) -> list[Completion]:
        """One batch run to ``params.max_new_tokens``, each answer cut at its row's ``lengths`` (see mixed_lengths)."""
        params = params or SamplingParams()
        inputs = self.prepare(conversations)
        output = self._run_generate(inputs, params)
        start = time.perf_counter()
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        limits = lengths or [params.max_new_tokens] * len(prompt_lengths)
        completions = [
            self.completion(row[:limit], n_prompt, replace(params, max_new_tokens=limit))
            for row, n_prompt, limit in zip(new_tokens, prompt_lengths, limits, strict=True)
        ]
        if self.observer:
            self.observer("detokenize", time.perf_counter() - start)
        return completions

    def completion(
        self, tokens: torch.Tensor | Sequence[int], prompt_tokens: int, params: SamplingParams
    ) -> Completion:
        """A row's answer from its generated token ids: cut at end of turn and at the first stop string."""
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        special = set(self.tokenizer.all_special_ids)
        eos = self.tokenizer.eos_token_id
        finished = eos in ids
        if finished:
            ids = ids[: ids.index(eos)]
        ids = [i for i in ids if i not in special]
        text, stopped = apply_stop(self.tokenizer.decode(ids), params.stop)
        finish = "stop" if finished or stopped or len(tokens) < params.max_new_tokens else "length"
        return Completion(text.strip(), prompt_tokens, len(ids), finish)

    def stream(
        self, conversations: Sequence[Conversation], params: SamplingParams | None = None
    ) -> Iterator[list[str]]:
        """Yield, per generation step, the new text of every row (empty string when a row produced none)."""
        params = params or SamplingParams()
        inputs = self.prepare(conversations)
        self._streamed = ([id(c) for c in conversations], inputs["attention_mask"].sum(dim=1).tolist())
        streamer = _BatchTextStreamer(self.tokenizer, len(conversations))

        def run():
            try:
                self._run_generate(inputs, params, streamer)
            except Exception as err:  # surface the failure in the consumer's thread
                streamer.fail(err)

        done = self._generation_thread().submit(run)
        yield from streamer
        # The streamer ends before generate() returns: wait for it, or a process that exits right after the last
        # token kills the thread mid-return ("terminate called without an active exception" from `vlmforge chat`).
        done.result()

    def prompt_tokens(self, conversations: Sequence[Conversation]) -> list[int]:
        """Each conversation's prompt length in tokens, images expanded: remembered from the last ``stream`` of these
        very conversations (usage for a streamed batch), else by preparing them again."""
        ids, lengths = self._streamed
        if ids == [id(c) for c in conversations]:
            return list(lengths)
        return self.prepare(conversations)["attention_mask"].sum(dim=1).tolist()

    def _generation_thread(self) -> ThreadPoolExecutor:
        """One long-lived thread for streamed generation: a fresh thread per call pays torch's per-thread setup
        (its CPU kernels' caches and thread pools) on every request."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmforge-generate")
            return self._executor


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class _BatchTextStreamer(BaseStreamer):
    """Incremental detokenisation for every row of a batched ``generate``.

    transformers' TextIteratorStreamer handles batch size 1 only; dynamic batching needs every row streamed.
    Each row's text is re-decoded from all its tokens and only the new suffix is emitted, so multi-byte
    characters split across tokens come out whole.
    """

    _END = object()

    def __init__(self, tokenizer, batch_size: int):
        self.tokenizer = tokenizer
        self.tokens: list[list[int]] = [[] for _ in range(batch_size)]
        self.emitted = [""] * batch_size
        self.done = [False] * batch_size
        self.queue: Queue = Queue()
        self._prompt_seen = False
        self._special = set(tokenizer.all_special_ids)

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first sends the prompt ids
            self._prompt_seen = True
            return
        deltas = []
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row] or token == self.tokenizer.eos_token_id:
                self.done[row] = True
                deltas.append("")
                continue
            if token not in self._special:
                self.tokens[row].append(token)
            text = self.tokenizer.decode(self.tokens[row])
            if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
                deltas.append("")
                continue
            deltas.append(text[len(self.emitted[row]) :])
            self.emitted[row] = text
        self.queue.put(deltas)

    def end(self) -> None:
        self.queue.put(self._END)

    def fail(self, err: Exception) -> None:
        self.queue.put(err)

    def __iter__(self) -> Iterator[list[str]]:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, Exception):
                raise item
            yield item
