"""Timing a generation's stages without changing it, for the server's ``GET /timings``.

Nothing here runs unless someone asks for timings. It uses the hooks transformers and torch already offer: the
streamer that ``generate`` calls once with the prompt and then once per new token (so the gaps between calls are
the prefill and the decode steps), forward hooks on the vision tower and projector, and a wrapper around the
image processor the multimodal processor calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

Observer = Callable[[str, float], None]
STAGES = {
    "template": "chat template",
    "tokenize": "tokenisation (the processor, less its image processor)",
    "image_processor": "image preprocessing",
    "generate_setup": "generate's setup and teardown (less the vision tower)",
    "vision": "vision tower and projector",
    "prefill": "the LM's forward over the prompts",
    "decode": "decode steps",
    "streamer": "incremental detokenisation (streamed requests)",
    "detokenize": "detokenisation",
}
VISION_MODULES = ("vision_tower", "multi_modal_projector")


class _TimedCall:
    """Calls ``target`` and reports the seconds it took; every other attribute is ``target``'s own."""

    def __init__(self, target: Any, report: Callable[[float], None]):
        self.__dict__["_target"], self.__dict__["_report"] = target, report

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._target(*args, **kwargs)
        finally:
            self._report(time.perf_counter() - start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class StepClock(BaseStreamer):
    """A streamer that stamps each call and passes it on to ``inner`` (a real streamer), leaving its time out."""

    def __init__(self, inner: BaseStreamer | None = None):
        self.inner = inner
        self.arrived: list[float] = []  # when generate handed over the prompt, then each token
        self.resumed: list[float] = []  # when generate got control back

    def put(self, value: torch.Tensor) -> None:
        self.arrived.append(time.perf_counter())
        if self.inner is not None:
            self.inner.put(value)
        self.resumed.append(time.perf_counter())

    def end(self) -> None:
        if self.inner is not None:
            self.inner.end()


class StageClocks:
    """Per-batch seconds of each stage (STAGES), told to the observer."""

    def __init__(self, model: torch.nn.Module, processor: Any, observer: Observer):
        self.observer = observer
        self.vision: list[tuple[float, float]] = []  # (start, end) of each vision forward in this generate
        self.image_processor = 0.0
        self._started = 0.0
        self._hooks = []
        for name, module in model.named_modules():
            if name.split(".")[-1] in VISION_MODULES:
                self._hooks.append(module.register_forward_pre_hook(self._vision_start))
                self._hooks.append(module.register_forward_hook(self._vision_end))
        self._processor = processor
        inner = getattr(processor, "image_processor", None)
        if inner is not None and not isinstance(inner, _TimedCall):
            processor.image_processor = _TimedCall(inner, self._image_processor_done)

    def _image_processor_done(self, seconds: float) -> None:
        self.image_processor += seconds

    def prepared(self, template: float, processor: float) -> None:
        """The batch's prompts were rendered in ``template`` seconds and processed in ``processor`` seconds."""
        self.observer("template", template)
        self.observer("image_processor", self.image_processor)
        self.observer("tokenize", processor - self.image_processor)
        self.image_processor = 0.0

    def _vision_start(self, *_) -> None:
        self._started = time.perf_counter()

    def _vision_end(self, *_) -> None:
        self.vision.append((self._started, time.perf_counter()))

    def take_vision(self) -> float:
        """Seconds the vision tower and projector ran since the last call (or the last ``step_clock``)."""
        seconds = sum(end - start for start, end in self.vision)
        self.vision = []
        return seconds

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        timed = getattr(self._processor, "image_processor", None)
        if isinstance(timed, _TimedCall):
            self._processor.image_processor = timed._target

    def step_clock(self, inner: BaseStreamer | None = None) -> StepClock:
        self.vision = []
        return StepClock(inner)

    def report(self, clock: StepClock, total: float) -> None:
        """Split one ``generate`` call's ``total`` seconds into its stages."""
        if len(clock.arrived) < 2:
            self.observer("generate_setup", total)
            return
        window = clock.resumed[0], clock.arrived[1]  # from the prompt's hand-over to the first token
        vision = sum(end - start for start, end in self.vision)
        # some models run the vision tower inside the prefill forward, others (LLaVA) while preparing its inputs
        inside = sum(max(0.0, min(end, window[1]) - max(start, window[0])) for start, end in self.vision)
        prefill = window[1] - window[0]
        decode = sum(a - r for a, r in zip(clock.arrived[2:], clock.resumed[1:-1], strict=True))
        streamer = sum(r - a for a, r in zip(clock.arrived, clock.resumed, strict=True))
        self.observer("vision", vision)
        self.observer("prefill", prefill - inside)
        self.observer("decode", decode)
        self.observer("decode_steps", float(len(clock.arrived) - 2))
        if clock.inner is not None:
            self.observer("streamer", streamer)
        self.observer("generate_setup", total - prefill - decode - streamer - (vision - inside))
