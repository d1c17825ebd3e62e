import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from vlmforge.data.collate import PaddingCollator
from vlmforge.data.dataset import ConversationDataset
from vlmforge.data.packing import (
    BatchPackingCollator,
    LayoutCost,
    PackedDataset,
    PackingCollator,
    disable_kv_cache,
    pack_layout,
    pack_samples,
)
from vlmforge.errors import ConfigError, DataError

# The lab LM's proportions: attention per pair is small next to the linear work per token, as in real models.
LAB = LayoutCost(per_token=6 * 1.2e6, per_pair=12 * 128 * 4)


def naive_first_fit_decreasing(lengths, max_length):
    bins, free = [], []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b, room in enumerate(free):
            if room >= lengths[index]:
                bins[b].append(index)
                free[b] -= lengths[index]
                break
        else:
            bins.append([index])
            free.append(max_length - lengths[index])
    return bins


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64).flatmap(lambda m: st.tuples(st.just(m), st.lists(st.integers(1, m), max_size=60))))
def test_pack_samples_is_first_fit_decreasing(case):
    max_length, lengths = case
    bins = pack_samples(lengths, max_length)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= max_length for b in bins)
    assert bins == naive_first_fit_decreasing(lengths, max_length)


def test_pack_samples_refuses_oversized_sample():
    with pytest.raises(DataError, match="over max_length"):
        pack_samples([3, 9], 8)


RECORDS = [
    {
        "id": "a",
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the circle?"},
            {"from": "gpt", "value": "red"},
            {"from": "human", "value": "How many objects are there?"},
            {"from": "gpt", "value": "3"},
        ],
    },
    {
        "id": "t",
        "conversations": [
            {"from": "human", "value": "Answer the question using a single word or phrase."},
            {"from": "gpt", "value": "a red circle at the top left"},
        ],
    },
    {
        "id": "b",
        "image": "b.png",
        "conversations": [
            {"from": "human", "value": "Is there a yellow star in the image? <image>"},
            {"from": "gpt", "value": "No"},
        ],
    },
]


@pytest.fixture(scope="module")
def setup(tiny_llava, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (40, 30), (255, 0, 0)).save(folder / "a.png")
    Image.effect_noise((32, 32), 64).convert("RGB").save(folder / "b.png")
    processor = AutoProcessor.from_pretrained(tiny_llava)
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava).eval()
    return ConversationDataset(RECORDS, processor, image_folder=folder, max_length=128), processor, model


def _token_weighted_loss(model, samples):
    total, count = 0.0, 0
    for s in samples:
        n = int((s["labels"][1:] != -100).sum())
        loss = model(
            input_ids=s["input_ids"][None],
            labels=s["labels"][None],
            pixel_values=s.get("pixel_values"),
            use_cache=False,
        ).loss
        total, count = total + float(loss) * n, count + n
    return total / count


@torch.no_grad()
def test_packed_samples_match_samples_alone(setup):
    dataset, processor, model = setup
    samples = [dataset[i] for i in range(len(dataset))]
    collator = PackingCollator(processor.tokenizer.pad_token_id)
    # Row 0 holds all three samples; row 1 holds one, followed by a padding segment.
    batch = collator([samples, [samples[1]]])
    assert "attention_mask" not in batch and batch["pixel_values"].shape[0] == 2
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    starts = [0, 0, 0]
    for i in range(1, 3):
        starts[i] = starts[i - 1] + len(samples[i - 1]["input_ids"])
    for sample, start in zip(samples, starts, strict=True):
        alone = model(
            input_ids=sample["input_ids"][None], pixel_values=sample.get("pixel_values"), use_cache=False
        ).logits[0]
        n = len(sample["input_ids"])
        assert torch.allclose(logits[0, start : start + n], alone, atol=1e-5)
    n1 = len(samples[1]["input_ids"])
    alone = model(input_ids=samples[1]["input_ids"][None], use_cache=False).logits[0]
    assert torch.allclose(logits[1, :n1], alone, atol=1e-5)
    assert batch["position_ids"][1, n1:].tolist() == list(range(batch["input_ids"].shape[1] - n1))

    packed_loss = model(**batch, use_cache=False).loss
    assert packed_loss.item() == pytest.approx(_token_weighted_loss(model, samples + [samples[1]]), abs=1e-5)


def test_padding_collator_batches_mixed_image_and_text(setup):
    dataset, processor, _ = setup
    samples = [dataset[i] for i in range(len(dataset))]
    batch = PaddingCollator(processor.tokenizer.pad_token_id, pad_to_multiple_of=8)(samples)
    lengths = [len(s["input_ids"]) for s in samples]
    assert batch["input_ids"].shape == (3, -(-max(lengths) // 8) * 8)
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert torch.equal(batch["pixel_values"], torch.cat([samples[0]["pixel_values"], samples[2]["pixel_values"]]))
    for row, sample in enumerate(samples):
        assert torch.equal(batch["labels"][row, : lengths[row]], sample["labels"])
        assert (batch["labels"][row, lengths[row] :] == -100).all()


def test_packed_dataset_rows_and_stats(setup):
    dataset, processor, _ = setup
    lengths = dataset.compute_lengths()
    row_length = max(lengths) + min(lengths)  # the longest and the shortest sample share a row
    packed = PackedDataset(dataset, max_length=row_length)
    stats = packed.stats()
    assert stats["samples"] == 3 and stats["rows"] == len(packed) == 2
    assert stats["real_token_fraction"] == pytest.approx(sum(lengths) / (2 * row_length))
    rows = [packed[i] for i in range(len(packed))]
    batch = PackingCollator(processor.tokenizer.pad_token_id, row_length=packed.max_length)(rows)
    assert batch["input_ids"].shape == (len(packed), packed.max_length)
    assert int((batch["labels"] != -100).sum()) == sum(int((dataset[i]["labels"][1:] != -100).sum()) for i in range(3))


def test_disable_kv_cache_keeps_packed_samples_apart(setup, tiny_llava):
    dataset, processor, _ = setup
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava).train()  # as the Trainer runs it
    samples = [dataset[i] for i in range(len(dataset))]
    batch = PackingCollator(processor.tokenizer.pad_token_id)([samples])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    start, n = len(samples[0]["input_ids"]), len(samples[1]["input_ids"])
    with torch.no_grad():
        alone = model(input_ids=samples[1]["input_ids"][None], use_cache=False).logits[0]
        # The top-level switch alone: the LM reads its own text config, keeps a cache, and builds a plain causal
        # mask, so the second sample attends to the first.
        model.config.use_cache = False
        leaky = model(**inputs).logits[0, start : start + n]
        assert not torch.allclose(leaky, alone, atol=1e-3)
        restore = disable_kv_cache(model)
        assert not model.config.text_config.use_cache and not model.config.vision_config.use_cache
        packed = model(**inputs).logits[0, start : start + n]
    assert torch.allclose(packed, alone, atol=1e-5)
    restore()
    assert model.config.text_config.use_cache and not model.config.use_cache


def test_batch_packing_collator_packs_one_batch_into_rows(setup):
    dataset, processor, _ = setup
    samples = [dataset[i] for i in range(len(dataset))]
    lengths = [len(s["input_ids"]) for s in samples]
    batch = BatchPackingCollator(processor.tokenizer.pad_token_id, row_length=max(lengths) + min(lengths))(samples)
    assert batch["input_ids"].shape[0] == 2 and "attention_mask" not in batch
    assert int((batch["position_ids"] == 0).sum()) >= len(samples)
    labelled = sum(int((s["labels"][1:] != -100).sum()) for s in samples)
    assert int((batch["labels"] != -100).sum()) == labelled


def _fake_samples(lengths):
    return [{"input_ids": torch.arange(1, n + 1), "labels": torch.arange(1, n + 1)} for n in lengths]


def _rows(layout, lengths):
    return [[lengths[i] for i in row] for row in layout]


def test_even_lengths_keep_a_row_each_and_collate_exactly_as_padding():
    lengths = [300, 304, 296, 310] * 4
    assert pack_layout(lengths, 640, LAB) == [[i] for i in range(16)]
    # Two per row would halve the rows, but each row's attention would cost four times as much.
    forced = pack_layout(lengths, 640, None)
    assert len(forced) == 8 and LAB.of(_rows(forced, lengths))[1] > LAB.of([[n] for n in lengths])[1]
    samples = _fake_samples(lengths)
    packed, padded = BatchPackingCollator(0, 640, LAB)(samples), PaddingCollator(0)(samples)
    assert packed.keys() == padded.keys() and "position_ids" not in packed
    assert all(torch.equal(packed[key], padded[key]) for key in padded)


def test_short_samples_share_rows_beside_a_long_one():
    lengths = [400] + [50] * 15
    layout = pack_layout(lengths, 448, LAB)
    assert [0] in layout and len(layout) == 3 and sorted(i for row in layout for i in row) == list(range(16))
    batch = BatchPackingCollator(0, 448, LAB)(_fake_samples(lengths))
    assert batch["input_ids"].shape == (3, 400) and "attention_mask" not in batch
    # flash-attention's kernels skip the blocks between samples: merging pays wherever it cuts padding.
    varlen = LayoutCost(LAB.per_token, LAB.per_pair, "varlen")
    assert len(pack_layout([300, 304, 296, 310], 640, varlen)) == 2


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=24),
    extra=st.integers(0, 600),
    per_pair=st.floats(0, 1e4),
    attention=st.sampled_from(["dense", "varlen"]),
)
def test_a_layout_is_never_predicted_costlier_than_padding(lengths, extra, per_pair, attention):
    cost, row_length = LayoutCost(1e3, per_pair, attention), max(lengths) + extra
    layout = pack_layout(lengths, row_length, cost)
    assert sorted(i for row in layout for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= row_length for row in layout)
    assert cost.of(_rows(layout, lengths))[1] <= cost.of([[n] for n in lengths])[1]


def test_layout_cost_refuses_an_unknown_attention_kind():
    with pytest.raises(ConfigError, match="attention must be one of dense, varlen"):
        LayoutCost(1.0, 1.0, "flex")
