"""The model side of continuous batching: a running decode batch whose rows share one padded KV cache.

Rows join by a batched prefill (image processor, vision tower and language model over all the new prompts at once)
whose cache is merged into the running one, the shorter side left-padded; finished rows leave through the cache's
``batch_select_indices``. Each step is one forward of every row's last token — input_ids (B, 1), the attention mask
over the padded cache and each row's own position id — the inputs transformers' ``generate`` builds, so a greedy
row gets ``generate``'s tokens. Sampling uses transformers' logits processors, per group of rows with equal settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache, GenerationConfig
from transformers.generation.logits_process import (
    LogitsProcessorList,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

# Generation-config entries the loop honours (suppress_tokens, top_k) or that do not change which token comes next;
# a model whose config sets anything else (repetition penalty, bad words, ...) keeps transformers' generate.
HONOURED_GENERATION_KEYS = {
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "suppress_tokens",
    "top_k",
    "max_length",
    "max_new_tokens",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "output_logits",
    "return_dict_in_generate",
    "transformers_version",
    "_from_model_config",
}


def stepwise_support(engine: object) -> str | None:
    """Why ``engine`` cannot be decoded step by step here, or None when it can: a LLaVA-style model with full
    attention in every layer and a generation config asking for nothing but what ``Sampler`` does."""
    model = getattr(engine, "model", None)
    if model is None or not all(hasattr(engine, name) for name in ("prepare", "completion", "tokenizer")):
        return f"{type(engine).__name__} is not a loaded vision-language model"
    config = model.config
    if getattr(config, "model_type", None) != "llava":
        return f"model type '{getattr(config, 'model_type', None)}' is not LLaVA-style"
    layer_types = getattr(config.get_text_config(decoder=True), "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types):
        return "its language model has sliding-window or other non-full attention layers"
    extra = set(model.generation_config.to_diff_dict()) - HONOURED_GENERATION_KEYS
    if extra:
        return f"its generation config sets {', '.join(sorted(extra))}"
    return None


@dataclass(frozen=True)
class RowSampling:
    """How one row picks its next token: temperature 0 is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0


class Sampler:
    """Next tokens for a batch of rows with mixed settings, through transformers' logits processors: the model's
    suppressed tokens for every row, then temperature, top-k (from the generation config) and top-p per group of
    sampled rows, as ``generate`` orders them."""

    def __init__(self, generation_config: GenerationConfig, device: torch.device):
        suppress = generation_config.suppress_tokens
        self.always = LogitsProcessorList([SuppressTokensLogitsProcessor(suppress, device=device)] if suppress else [])
        self.top_k = generation_config.top_k
        self._warpers: dict[RowSampling, LogitsProcessorList] = {}

    def warpers(self, setting: RowSampling) -> LogitsProcessorList:
        if setting not in self._warpers:
            warpers = LogitsProcessorList()
            if setting.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(setting.temperature))
            if self.top_k:
                warpers.append(TopKLogitsWarper(self.top_k))
            if setting.top_p < 1.0:
                warpers.append(TopPLogitsWarper(setting.top_p))
            self._warpers[setting] = warpers
        return self._warpers[setting]

    def choose(self, logits: torch.Tensor, groups: Sequence[tuple[RowSampling, torch.Tensor]]) -> torch.Tensor:
        """(B,) next tokens from (B, vocab) float logits; ``groups`` are the sampled rows' indices per setting."""
        # the processors used here read no earlier tokens, so they get the logits' row count as a stand-in
        ids = torch.zeros((logits.shape[0], 1), dtype=torch.long, device=logits.device)
        scores = self.always(ids, logits)
        tokens = scores.argmax(dim=-1)
        for setting, rows in groups:
            warped = self.warpers(setting)(ids[rows], scores[rows])
            tokens[rows] = torch.multinomial(warped.softmax(dim=-1), num_samples=1).squeeze(1)
        return tokens


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    if width == 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim) + [width, 0]
    return F.pad(tensor, pad)


class RunningBatch:
    """Rows being decoded together. Row i's cache is row i of ``cache``; ``mask`` marks its real (not padding)
    columns; ``positions`` is the position id of its next token; ``pending`` the token sampled for it and not yet
    fed to the model."""

    def __init__(self, model: torch.nn.Module, sampler: Sampler):
        self.model = model
        self.sampler = sampler
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros((0, 0), dtype=torch.long)
        self.positions = torch.zeros(0, dtype=torch.long)
        self.pending = torch.zeros(0, dtype=torch.long)
        self.settings: list[RowSampling] = []
        self.groups: list[tuple[RowSampling, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self.settings)

    @torch.inference_mode()
    def prefill(self, inputs: dict[str, torch.Tensor], settings: Sequence[RowSampling]) -> torch.Tensor:
        """Run the new rows' prompts (the processor's left-padded batch) and add them at the end of the batch;
        return their first tokens."""
        mask = inputs["attention_mask"]
        position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate derives them
        out = self.model(**inputs, position_ids=position_ids, use_cache=True, logits_to_keep=1)
        groups = _groups(settings, mask.device)
        tokens = self.sampler.choose(out.logits[:, -1, :].float(), groups)
        self._merge(out.cache, mask.long(), mask.sum(dim=-1).long(), tokens, settings)
        return tokens

    @torch.inference_mode()
    def step(self) -> torch.Tensor:
        """Feed every row's pending token; return the next one of each row."""
        ones = torch.ones((len(self), 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = self.model(
            input_ids=self.pending[:, None],
            attention_mask=self.mask,
            position_ids=self.positions[:, None],
            cache=self.cache,
            use_cache=True,
        )
        self.cache = out.cache
        self.positions = self.positions + 1
        self.pending = self.sampler.choose(out.logits[:, -1, :].float(), self.groups)
        return self.pending

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (indices, in order); drop cache columns that are padding in every row left."""
        if len(rows) == len(self):
            return
        self.settings = [self.settings[i] for i in rows]
        if not rows:
            self.cache, self.mask = None, self.mask[:0, :0]
            self.positions, self.pending, self.groups = self.positions[:0], self.pending[:0], []
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask, self.positions, self.pending = self.mask[index], self.positions[index], self.pending[index]
        self.cache.batch_select_indices(index)
        first = int(self.mask.any(dim=0).int().argmax())  # leading columns no row attends to
        if first > 0:
            self.mask = self.mask[:, first:]
            self.cache = DynamicCache([(keys[:, :, first:], values[:, :, first:]) for keys, values, _ in self.cache])
        self.groups = _groups(self.settings, self.mask.device)

    def _merge(
        self,
        cache: DynamicCache,
        mask: torch.Tensor,
        positions: torch.Tensor,
        tokens: torch.Tensor,
        settings: Sequence[RowSampling],
    ) -> None:
        if self.cache is None:
            self.cache, self.mask, self.positions, self.pending = cache, mask, positions, tokens
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            old, new = width - self.mask.shape[1], width - mask.shape[1]
            self.cache = DynamicCache(
                [
                    (
                        torch.cat([_left_pad(k_old, old, 2), _left_pad(k_new, new, 2)]),
                        torch.cat([_left_pad(v_old, old, 2), _left_pad(v_new, new, 2)]),
                    )
                    for (k_old, v_old, _), (k_new, v_new, _) in zip(self.cache, cache, strict=True)
                ]
            )
            self.mask = torch.cat([_left_pad(self.mask, old, 1), _left_pad(mask, new, 1)])
            self.positions = torch.cat([self.positions, positions])
            self.pending = torch.cat([self.pending, tokens])
        self.settings = [*self.settings, *settings]
        self.groups = _groups(self.settings, self.mask.device)


def _groups(settings: Sequence[RowSampling], device: torch.device) -> list[tuple[RowSampling, torch.Tensor]]:
    """The sampled rows' indices per setting (greedy rows need none: they take the argmax)."""
    rows: dict[RowSampling, list[int]] = {}
    for i, setting in enumerate(settings):
        if setting.temperature > 0:
            rows.setdefault(setting, []).append(i)
    return [(setting, torch.tensor(index, device=device)) for setting, index in rows.items()]
