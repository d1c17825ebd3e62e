"""The unified model (Uni-X): both paths through the split layers give the same logits, packed samples stay apart,
no NaN, text-only batches, the shared arm is the plain LM, save/load, and clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

from unified_helpers import PAD, TEXT_VOCAB, VISION_START, code, mixed_row, tiny_text_config, tiny_unified
from vlmforge.models.unified import UnifiedCache

pytestmark = pytest.mark.filterwarnings("error::FutureWarning")
ATOL = 1e-5


def incremental(model, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    """Logits of every position from a prefill of ``prefill`` tokens, then one token at a time through the cache."""
    out = model(ids[:, :prefill], use_cache=True)
    logits, cache = [out.logits], out.cache
    for t in range(prefill, ids.shape[1]):
        out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
        logits.append(out.logits)
    assert isinstance(cache, UnifiedCache)
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize(
    ("attn", "e", "d"), [("sdpa", 1, 1), ("sdpa", 2, 0), ("sdpa", 0, 3), ("sdpa", 2, 2), ("eager", 1, 1)]
)
def test_substreams_equal_masks_and_incremental_decode(attn, e, d):
    model = tiny_unified(e=e, d=d, attn=attn)
    ids = torch.tensor([mixed_row(0), mixed_row(1)])
    with torch.no_grad():
        streams = model(ids, use_cache=False).logits
        masks = model(ids, use_cache=False, substreams=False).logits
        decoded = incremental(model, ids, prefill=4)
    torch.testing.assert_close(masks, streams, atol=ATOL, rtol=0)
    torch.testing.assert_close(decoded, streams, atol=ATOL, rtol=0)


def test_vision_copies_change_only_vision_tokens_in_split_layers():
    """A vision copy is used by vision tokens: perturbing it moves their logits, and text before the image none."""
    model = tiny_unified(e=1, d=0)
    ids = torch.tensor([mixed_row(0)])
    with torch.no_grad():
        before = model(ids, use_cache=False).logits
        model.vision_layers[0].mlp.down_proj.weight.add_(0.5)
        after = model(ids, use_cache=False).logits
    first_vision = mixed_row(0).index(VISION_START)
    torch.testing.assert_close(after[:, :first_vision], before[:, :first_vision], atol=ATOL, rtol=0)
    assert (after[:, first_vision] - before[:, first_vision]).abs().max() > 1e-3


def test_split_attention_stays_within_modality():
    """In a model whose layers are all split, text logits ignore the image entirely."""
    model = tiny_unified(e=4, d=0)
    row = mixed_row(0)
    other = list(row)
    start = row.index(VISION_START)
    other[start + 1 : start + 5] = [code(15 - (t - TEXT_VOCAB)) for t in row[start + 1 : start + 5]]
    with torch.no_grad():
        a = model(torch.tensor([row]), use_cache=False).logits
        b = model(torch.tensor([other]), use_cache=False).logits
    text = [i for i, t in enumerate(row) if t < TEXT_VOCAB and t != VISION_START]
    torch.testing.assert_close(a[0, text], b[0, text], atol=ATOL, rtol=0)


@pytest.mark.parametrize(("arm", "substreams"), [("two_end", True), ("two_end", False), ("mot", True)])
def test_packed_equals_unpacked(arm, substreams):
    model = tiny_unified(arm=arm, e=1, d=1)
    a, b = mixed_row(0), mixed_row(1, text=3, codes=4)
    packed = torch.tensor([a + b])
    positions = torch.tensor([list(range(len(a))) + list(range(len(b)))])
    with torch.no_grad():
        together = model(packed, position_ids=positions, use_cache=False, substreams=substreams).logits
        alone_a = model(torch.tensor([a]), use_cache=False, substreams=substreams).logits
        alone_b = model(torch.tensor([b]), use_cache=False, substreams=substreams).logits
    torch.testing.assert_close(together[:, : len(a)], alone_a, atol=ATOL, rtol=0)
    torch.testing.assert_close(together[:, len(a) :], alone_b, atol=ATOL, rtol=0)


def test_left_padding_equals_unpadded_on_both_paths():
    model = tiny_unified(e=1, d=1)
    long, short = mixed_row(0), mixed_row(1, text=2)
    pad = len(long) - len(short)
    ids = torch.tensor([long, [PAD] * pad + short])
    mask = torch.tensor([[1] * len(long), [0] * pad + [1] * len(short)])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        alone = model(torch.tensor([short]), use_cache=False).logits
        for substreams in (True, False):
            out = model(ids, attention_mask=mask, position_ids=positions, use_cache=False, substreams=substreams)
            torch.testing.assert_close(out.logits[1:, pad:], alone, atol=ATOL, rtol=0)
            assert torch.isfinite(out.logits).all()


def test_no_nan_from_fully_masked_rows_forward_and_backward():
    """Rows with nothing to attend to: a vision-only row in the text copies, leading padding, a lone text token."""
    for attn in ("sdpa", "eager"):
        model = tiny_unified(e=2, d=2, attn=attn).train()
        ids = torch.tensor([[VISION_START, code(1), code(2), code(3)], [PAD, PAD, 7, VISION_START]])
        mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
        for substreams in (True, False):
            model.zero_grad()
            out = model(ids, attention_mask=mask, labels=ids, use_cache=False, substreams=substreams)
            assert torch.isfinite(out.logits).all()
            out.loss.backward()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_text_only_batch_runs_without_fake_tokens():
    model = tiny_unified(e=1, d=1).train()
    ids = torch.tensor([[7, 8, 9, 10, 11], [12, 13, 14, 15, 16]])
    out = model(ids, labels=ids)
    assert out.logits.shape[:2] == ids.shape
    assert out.cache is None  # in training the default is the substream path, without a cache
    out.loss.backward()
    assert all(p.grad is None for p in model.vision_layers.parameters())
    assert model.model.layers[0].mlp.down_proj.weight.grad is not None


def test_shared_arm_is_the_plain_lm():
    model = tiny_unified(arm="shared")
    lm = Qwen2ForCausalLM(tiny_text_config()).eval()
    lm.model.load_state_dict(model.model.state_dict())
    lm.lm_head.load_state_dict(model.lm_head.state_dict())
    ids = torch.tensor([mixed_row(0)])
    with torch.no_grad():
        torch.testing.assert_close(model(ids, use_cache=False).logits, lm(ids).logits, atol=ATOL, rtol=0)


def test_parameter_counts():
    shared, split = tiny_unified(arm="shared"), tiny_unified(e=1, d=2)
    layer = sum(p.numel() for p in shared.model.layers[0].parameters())
    assert split.parameter_counts()["total"] == shared.parameter_counts()["total"] + 3 * layer
    assert (
        split.parameter_counts()["active"] == shared.parameter_counts()["active"] == shared.parameter_counts()["total"]
    )


@pytest.mark.parametrize("arm", ["two_end", "mot"])
def test_save_and_load_round_trip(tmp_path, arm):
    model = tiny_unified(arm=arm, e=1, d=1, tie_word_embeddings=True)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([mixed_row(0)])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, use_cache=False).logits, model(ids, use_cache=False).logits)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_generate_with_left_padding_matches_greedy_decoding():
    model = tiny_unified(e=1, d=1)
    prompts = [mixed_row(0)[:8], mixed_row(1)[:5]]
    pad = len(prompts[0]) - len(prompts[1])
    ids = torch.tensor([prompts[0], [PAD] * pad + prompts[1]])
    mask = torch.tensor([[1] * len(prompts[0]), [0] * pad + [1] * len(prompts[1])])
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=PAD)
    for row, prompt in enumerate(prompts):
        seq = torch.tensor([prompt])
        for _ in range(4):
            with torch.no_grad():
                nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
        assert out[row, -4:].tolist() == seq[0, -4:].tolist()


def test_out_of_range_image_code_is_a_clear_error():
    model = tiny_unified()
    with pytest.raises(ValueError, match=r"token id 66 is out of range: .* 16 image codes \(ids 50..65\)"):
        model(torch.tensor([[7, VISION_START, code(16)]]))


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_other_qwen2_family_lms(family):
    """Built on Qwen3 (q/k norms in its attention) or Llama, both paths and the cache still agree."""
    from transformers import LlamaConfig, Qwen3Config

    from vlmforge.models.unified import UnifiedConfig, UnifiedForCausalLM

    config_class = {"qwen3": Qwen3Config, "llama": LlamaConfig}[family]
    text = config_class(
        vocab_size=66, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
    )  # fmt: skip
    config = UnifiedConfig(
        text_config=text.to_dict(), num_vision_encode_layers=1, num_vision_decode_layers=1, text_vocab_size=50,
        codebook_size=16, vision_start_token_id=VISION_START, vision_end_token_id=4, unconditional_token_id=5,
        init_vision_with_text=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = UnifiedForCausalLM(config).eval()
    assert type(model.vision_layers[0]).__name__.lower().startswith(family)
    ids = torch.tensor([mixed_row(2)])
    with torch.no_grad():
        streams = model(ids, use_cache=False).logits
        torch.testing.assert_close(incremental(model, ids, prefill=3), streams, atol=ATOL, rtol=0)


def test_mot_routes_every_module_per_token_with_global_attention():
    mot = tiny_unified(arm="mot", init_vision_with_text=True)
    shared = tiny_unified(arm="shared")
    shared.load_state_dict({k: v for k, v in mot.state_dict().items() if not k.startswith("vision_layers")})
    ids = torch.tensor([mixed_row(0), mixed_row(1)])
    with torch.no_grad():
        # Twins equal to their text modules: the shared model exactly.
        torch.testing.assert_close(mot(ids, use_cache=False).logits, shared(ids, use_cache=False).logits)
        for twin in mot.vision_layers:
            twin.mlp.down_proj.weight.mul_(-2.0)
            twin.self_attn.v_proj.bias.add_(0.3)
        full = mot(ids, use_cache=False).logits
        torch.testing.assert_close(incremental(mot, ids, prefill=3), full, atol=ATOL, rtol=0)
        before = shared(ids, use_cache=False).logits
    start = mixed_row(0).index(VISION_START)
    torch.testing.assert_close(full[0, :start], before[0, :start], atol=ATOL, rtol=0)
    assert (full[0, start:] - before[0, start:]).abs().amax(-1).min() > 1e-4  # global attention: text after too
    layer = sum(p.numel() for p in shared.model.layers.parameters())
    assert mot.parameter_counts()["total"] == shared.parameter_counts()["total"] + layer
    assert mot.parameter_counts()["active"] == shared.parameter_counts()["total"]


def test_cache_reorders_its_modalities_with_its_keys():
    """Beam search reorders the cache; the modalities follow, so decoding after a swap equals the swapped rows."""
    model = tiny_unified(e=1, d=1)
    a, b = mixed_row(0), mixed_row(3, text=2, codes=7)
    a, b = a[: len(b)], b  # equal lengths, different modality patterns
    ids = torch.tensor([a, b])
    with torch.no_grad():
        cache = model(ids[:, :-1], use_cache=True).cache
        cache.reorder_cache(torch.tensor([1, 0]))
        step = model(ids.flip(0)[:, -1:], cache=cache, use_cache=True).logits
        full = model(ids.flip(0), use_cache=False).logits[:, -1:]
        torch.testing.assert_close(step, full, atol=ATOL, rtol=0)
        beams = model.generate(input_ids=ids[:1, :6], max_new_tokens=3, num_beams=2, do_sample=False, pad_token_id=PAD)
    assert beams.shape == (1, 9)


def test_the_old_cache_argument_name_still_reaches_the_cache():
    model = tiny_unified()
    ids = torch.tensor([mixed_row(0)])
    with torch.no_grad(), pytest.warns(FutureWarning):
        cache = model(ids[:, :-1], use_cache=True).cache
        step = model(ids[:, -1:], past_key_values=cache, use_cache=True).logits
        full = model(ids, use_cache=False).logits[:, -1:]
    torch.testing.assert_close(step, full, atol=ATOL, rtol=0)
