"""The unified model (Uni-X): a Qwen2-family LM that reads and writes image codes, with its first E and last D
layers duplicated per modality.

Composition, not a copy: ``self.model`` is transformers' own base model of ``config.text_config`` (embeddings,
decoder layers, final norm, rotary embedding), and ``self.vision_layers`` are more instances of the same
decoder-layer class. ``self.model.layers[i]`` is the text copy of split layer i. Embeddings, final norm and
``lm_head`` are shared.

The ``mot`` arm instead gives every layer's norms, attention projections and MLP a vision twin
(``vision_layers[i]`` holds layer i's) and keeps attention global; ``routing`` sends each token through its own
modality's modules.

Two exact paths through the split layers:

- **substreams** (training, no cache): each modality's tokens are gathered out of the rows with their original
  position ids, and each copy runs only on its own modality;
- **masks** (inference, with a KV cache): both copies run on every position, each attending only within its
  modality, and every token keeps its own modality's output. Each copy caches keys and values for all positions.
  A step whose tokens are all of one modality (every step of image generation, a text-only decode step) runs only
  that modality's copy, since the other's outputs would all be dropped.

Packed rows (position ids restarting at 0, no attention mask) keep their samples apart in every layer.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.masking_utils import find_packed_sequence_indices
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from vlmforge.models.kept_logits import slice_hidden
from vlmforge.models.unified.cache import UnifiedCache
from vlmforge.models.unified.configuration import UnifiedConfig
from vlmforge.models.unified.masks import allowed_keys, for_attention, vision_tokens
from vlmforge.models.unified.routing import route
from vlmforge.models.unified.streams import Substream


class UnifiedForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = UnifiedConfig
    config: UnifiedConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: UnifiedConfig):
        super().__init__(config)
        text = config.text_config
        if "sliding_attention" in (getattr(text, "layer_types", None) or ()):
            raise ValueError("the unified model needs full attention in every layer; this LM uses a sliding window")
        self.model = AutoModel.from_config(text)
        self.vision_layers = nn.ModuleList()
        for slot, index in enumerate(config.copied_layers):
            layer = type(self.model.layers[index])(text, index)
            # Its own KV-cache slot, after the LM's layers, so the two copies never share cached keys.
            layer.self_attn.layer_idx = text.num_hidden_layers + slot
            self.vision_layers.append(layer)
        self._route: torch.Tensor | None = None  # mot: which of the tokens being run are vision tokens
        if config.arm == "mot":
            for index, twin in zip(config.copied_layers, self.vision_layers, strict=True):
                route(self.model.layers[index], twin, lambda: self._route)
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        self.post_init()
        if config.init_vision_with_text and not self.lm_head.weight.is_meta:  # from_pretrained loads them instead
            self.copy_text_into_vision_layers()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def copy_text_into_vision_layers(self) -> None:
        """Start every vision copy as a copy of its text layer (``init_vision_with_text``)."""
        with torch.no_grad():
            for layer, index in zip(self.vision_layers, self.config.copied_layers, strict=True):
                layer.load_state_dict(self.model.layers[index].state_dict())

    def parameter_counts(self) -> dict[str, int]:
        """``total``: every parameter. ``active``: those one token passes through (one copy of each split layer).
        ``*_non_embedding``: the same without the input embeddings and lm_head. For mot, ``active`` counts each
        layer once, as one token passes through one copy of each of its modules."""
        total = sum(p.numel() for p in self.parameters())
        vision = sum(p.numel() for p in self.vision_layers.parameters())
        tables = {id(p): p.numel() for m in (self.model.embed_tokens, self.lm_head) for p in m.parameters()}
        embedding = sum(tables.values())
        return {
            "total": total,
            "active": total - vision,
            "total_non_embedding": total - embedding,
            "active_non_embedding": total - vision - embedding,
        }

    def check_token_ids(self, input_ids: torch.Tensor) -> None:
        """A clear error for ids the embedding table does not have (an image code beyond the codebook)."""
        if input_ids.numel() == 0:
            return
        low, high = int(input_ids.min()), int(input_ids.max())
        vocab = self.config.text_config.vocab_size
        if low < 0 or high >= vocab:
            c = self.config
            raise ValueError(
                f"token id {high if high >= vocab else low} is out of range: this model has {c.text_vocab_size} text "
                f"ids and {c.codebook_size} image codes (ids {c.text_vocab_size}..{vocab - 1})"
            )

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: UnifiedCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        substreams: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """``substreams``: which path runs the split layers (default: substreams without a cache, masks with one).
        ``attention_mask`` [batch, cached + new positions]: 0 for padding. Without it, position ids that restart
        at 0 mark packed samples, which then never attend to each other."""
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("the unified model takes input_ids (a token's modality is read from its id)")
        self.check_token_ids(input_ids)
        if use_cache is None:  # training takes the substream path unless a cache is asked for
            use_cache = bool(getattr(self.config, "use_cache", True)) and not self.training
        cache = self._cache_for(cache, use_cache)
        substreams = cache is None if substreams is None else substreams
        if substreams and cache is not None:
            raise ValueError("the substream path runs without a KV cache; pass use_cache=False or substreams=False")
        hidden = self.model.embed_tokens(input_ids)
        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)[None]
        position_ids = position_ids.expand(input_ids.shape[0], -1)
        vision = vision_tokens(input_ids, self.config.text_vocab_size, self.config.vision_start_token_id)
        # Left set after the call: gradient checkpointing reruns the layers during backward and routes again.
        self._route = vision if self.config.arm == "mot" else None
        samples = find_packed_sequence_indices(position_ids) if attention_mask is None and cache is None else None
        run = self._run_substreams if substreams else self._run_masks
        hidden = run(hidden, position_ids, vision, attention_mask, samples, cache)
        hidden = self.model.norm(hidden)
        logits = self.lm_head(slice_hidden(hidden, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits,
                labels=labels,
                vocab_size=self.config.text_config.vocab_size,
                num_items_in_batch=kwargs.get("num_items_in_batch"),  # the Trainer's count under accumulation
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)

    def _cache_for(self, cache, use_cache: bool) -> UnifiedCache | None:
        if not use_cache:
            return None
        if cache is None or (not isinstance(cache, UnifiedCache) and cache.get_seq_length() == 0):
            return UnifiedCache()  # generate() hands in an empty DynamicCache; ours also records modalities
        if not isinstance(cache, UnifiedCache):
            raise ValueError("the unified model's KV cache is a UnifiedCache (it records each position's modality)")
        return cache

    def _split_copies(self) -> dict[int, nn.Module]:
        """Layer index -> its vision copy, for the layers whose copies attend within their modality."""
        if not self.config.split_layers:
            return {}
        return dict(zip(self.config.split_layers, self.vision_layers, strict=True))

    def _mask(self, batch, q_len, kv_len, device, dtype, **conditions) -> torch.Tensor:
        allowed = allowed_keys(batch, q_len, kv_len, device, **conditions)
        return for_attention(allowed, self.config.text_config._attn_implementation, dtype)

    def _layer(self, layer, hidden, mask, position_ids, position_embeddings, cache):
        return layer(
            hidden,
            attention_mask=mask,
            position_ids=position_ids,
            position_embeddings=position_embeddings,
            cache=cache,
            use_cache=cache is not None,
        )

    def _run_masks(self, hidden, position_ids, vision, attention_mask, samples, cache):
        """Every layer on every position; split layers merge their two copies by each token's modality."""
        batch, q_len = vision.shape
        past_vision = cache.extend_modality(vision) if cache is not None else vision
        kv_len = past_vision.shape[1]
        if attention_mask is not None and attention_mask.shape[1] != kv_len:
            raise ValueError(f"attention_mask covers {attention_mask.shape[1]} positions, the model sees {kv_len}")
        mask = lambda **keep: self._mask(  # noqa: E731
            batch, q_len, kv_len, hidden.device, hidden.dtype, key_valid=attention_mask, samples=samples, **keep
        )
        shared = mask()
        text_mask = vision_mask = None
        if self.config.split_layers:
            text_mask = mask(query_keep=~vision, key_keep=~past_vision)
            vision_mask = mask(query_keep=vision, key_keep=past_vision)
        embeddings = self.model.rotary_emb(hidden, position_ids)
        copies = self._split_copies()
        # A step of one modality (image codes in every step of image generation, or text only) runs only that
        # modality's copies: the other copies' outputs would all be dropped.
        all_text, all_vision = not vision.any(), bool(vision.all())
        for index, layer in enumerate(self.model.layers):
            if index not in copies:
                hidden = self._layer(layer, hidden, shared, position_ids, embeddings, cache)
                continue
            if all_text:
                _reserve_cache_slot(copies[index], hidden, cache)
                hidden = self._layer(layer, hidden, text_mask, position_ids, embeddings, cache)
            elif all_vision:
                _reserve_cache_slot(layer, hidden, cache)
                hidden = self._layer(copies[index], hidden, vision_mask, position_ids, embeddings, cache)
            else:
                text_out = self._layer(layer, hidden, text_mask, position_ids, embeddings, cache)
                vision_out = self._layer(copies[index], hidden, vision_mask, position_ids, embeddings, cache)
                hidden = torch.where(vision[..., None], vision_out, text_out)
        return hidden

    def _run_substreams(self, hidden, position_ids, vision, attention_mask, samples, cache):
        """Shared layers on the whole rows; each run of split layers on the two gathered substreams."""
        batch, seq = vision.shape
        shared = self._mask(batch, seq, seq, hidden.device, hidden.dtype, key_valid=attention_mask, samples=samples)
        embeddings = self.model.rotary_emb(hidden, position_ids)
        copies = self._split_copies()
        streams = []
        for select in (~vision, vision) if copies else ():
            stream = Substream.of(select)
            valid = stream.valid if attention_mask is None else stream.valid & stream.gather(attention_mask.bool())
            stream_samples = stream.gather(samples) if samples is not None else None
            stream_mask = self._mask(
                batch,
                stream.length,
                stream.length,
                hidden.device,
                hidden.dtype,
                key_valid=valid,
                samples=stream_samples,
            )
            positions = stream.gather(position_ids)
            streams.append((stream, stream_mask, positions, self.model.rotary_emb(hidden, positions)))
        index, layers = 0, len(self.model.layers)
        while index < layers:
            if index not in copies:
                hidden = self._layer(self.model.layers[index], hidden, shared, position_ids, embeddings, None)
                index += 1
                continue
            end = index
            while end < layers and end in copies:
                end += 1
            pairs = [(self.model.layers[i], copies[i]) for i in range(index, end)]
            hidden = self._split_run(hidden, pairs, streams)
            index = end
        return hidden

    def _split_run(self, hidden, pairs, streams):
        """Consecutive split layers on the text substream (text copies) and the vision substream (vision copies)."""
        for copy, (stream, mask, positions, embeddings) in enumerate(streams):
            if stream.length == 0:
                continue  # a text-only batch has no vision substream: its copies are simply not run
            part = stream.gather(hidden)
            for pair in pairs:
                part = self._layer(pair[copy], part, mask, positions, embeddings, None)
            hidden = stream.scatter(hidden, part)
        return hidden


def _reserve_cache_slot(skipped: nn.Module, hidden: torch.Tensor, cache: UnifiedCache | None) -> None:
    """Give a split layer's copy that this step does not run zero keys and values for the step's positions, so every
    layer's cache covers the same positions. They are never read: they hold the other modality's tokens, which the
    copy's modality mask hides from all of its queries."""
    if cache is None:
        return
    attention = skipped.self_attn
    kv_heads = attention.config.num_key_value_heads
    empty = hidden.new_zeros(hidden.shape[0], kv_heads, hidden.shape[1], attention.head_dim)
    cache.update(empty, empty, attention.layer_idx)
