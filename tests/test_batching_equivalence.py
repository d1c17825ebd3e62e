"""The same samples give the same training step whatever the batching: padded, packed, cost-aware packed (some
micro-batches padded, some rows shared) or length-grouped micro-batches reach the same loss and gradients, with the
loss a per-token mean over the global batch (the Trainer's ``num_items_in_batch``); and the same again when the LM
head runs only where labels are."""

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration, TrainingArguments

from vlmforge.data.collate import PaddingCollator
from vlmforge.data.dataset import ConversationDataset
from vlmforge.data.length_grouping import length_grouped_order
from vlmforge.data.packing import BatchPackingCollator, LayoutCost, disable_kv_cache
from vlmforge.models import kept_logits
from vlmforge.train.recipe import StageConfig
from vlmforge.train.trainer import VlmTrainer

QUESTION = ("<image>\nWhat colour is the circle?", "red")
TURNS = [
    ("How many objects are there?", "3"),
    ("Is there a yellow star in the image?", "No"),
    ("Answer the question using a single word or phrase.", "a red circle at the top left"),
]


def _records():
    """Eight records from one to four turns, with and without an image: lengths spread as in real data."""
    records = []
    for i in range(8):
        turns = [QUESTION, *TURNS[: i % 4]] if i % 3 else TURNS[: 1 + i % 3]
        conversation = [
            m for human, gpt in turns for m in ({"from": "human", "value": human}, {"from": "gpt", "value": gpt})
        ]
        records.append({"id": str(i), **({"image": "a.png"} if i % 3 else {}), "conversations": conversation})
    return records


@pytest.fixture(scope="module")
def samples_and_model(tiny_llava, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (32, 32), (220, 30, 30)).save(folder / "a.png")
    processor = AutoProcessor.from_pretrained(tiny_llava)
    dataset = ConversationDataset(_records(), processor, image_folder=folder, max_length=256)
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava).train()
    disable_kv_cache(model)
    return [dataset[i] for i in range(len(dataset))], processor.tokenizer.pad_token_id, model


def _kept_loss(model, batch, num_items):
    """The loss from the logits of the supervised positions alone, as VlmTrainer takes it in training."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=kept_logits.supervised_positions(labels)).logits
    assert logits.shape[-2] < labels.numel()  # the head really skipped positions
    return kept_logits.causal_lm_loss(logits, labels, num_items)


def _step(model, batches, num_items, loss_of=None):
    """One optimizer step's loss and gradients over micro-batches, normalised as the Trainer does."""
    model.zero_grad()
    total = 0.0
    for batch in batches:
        loss = loss_of(model, batch, num_items) if loss_of else model(**batch, num_items_in_batch=num_items).loss
        loss.backward()
        total += loss.item()
    return total, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_padded_packed_and_length_grouped_batches_give_the_same_step(samples_and_model):
    samples, pad, model = samples_and_model
    lengths = [len(s["input_ids"]) for s in samples]
    assert max(lengths) > 2 * min(lengths)
    num_items = torch.tensor(sum(int((s["labels"][1:] != -100).sum()) for s in samples))
    halves = [samples[:4], samples[4:]]
    padded = [PaddingCollator(pad)(half) for half in halves]
    row = -(-max(lengths) // 64) * 64
    packed = [BatchPackingCollator(pad, row)(half) for half in halves]
    assert sum(b["input_ids"].shape[0] for b in packed) < len(samples)  # rows really hold several samples
    order = length_grouped_order(lengths, 4, seed=0)
    grouped = [PaddingCollator(pad)([samples[i] for i in order[start : start + 4]]) for start in (0, 4)]

    reference_loss, reference = _step(model, padded, num_items)
    # The per-token mean over the global batch: each sample's summed token losses, over all labelled tokens.
    with torch.no_grad():
        summed = sum(model(**PaddingCollator(pad)([s]), num_items_in_batch=torch.tensor(1)).loss for s in samples)
    assert reference_loss == pytest.approx(float(summed) / int(num_items), abs=1e-5)
    for batches in (packed, grouped):
        loss, grads = _step(model, batches, num_items)
        assert loss == pytest.approx(reference_loss, abs=1e-5)
        assert grads.keys() == reference.keys()
        for name, grad in grads.items():
            assert torch.allclose(grad, reference[name], atol=1e-5), name


def test_cost_aware_packing_pads_some_batches_packs_others_and_keeps_the_step(samples_and_model):
    samples, pad, model = samples_and_model
    lengths = [len(s["input_ids"]) for s in samples]
    num_items = torch.tensor(sum(int((s["labels"][1:] != -100).sum()) for s in samples))
    # Attention as dear as the rest: two samples of one length never pay to share a row, short ones beside a long
    # one do.
    collate = BatchPackingCollator(pad, 4 * max(lengths), LayoutCost(per_token=1.0, per_pair=1.0))
    twins = [i for i in range(len(samples)) if lengths.count(lengths[i]) == 2]
    rest = [i for i in range(len(samples)) if i not in twins]
    assert len(twins) == 2
    padded_batch, mixed_batch = collate([samples[i] for i in twins]), collate([samples[i] for i in rest])
    reference = PaddingCollator(pad)([samples[i] for i in twins])
    assert padded_batch.keys() == reference.keys() and all(
        torch.equal(padded_batch[k], reference[k]) for k in reference
    )
    assert "attention_mask" not in mixed_batch and mixed_batch["input_ids"].shape == (3, max(lengths))
    segments = (mixed_batch["position_ids"] == 0).sum(1)  # each row's samples, plus a trailing padding segment
    assert segments.min() == 1 and segments.max() > 2  # the longest sample alone, shorter ones sharing a row

    reference_loss, reference_grads = _step(
        model, [PaddingCollator(pad)(h) for h in (samples[:4], samples[4:])], num_items
    )
    loss, grads = _step(model, [padded_batch, mixed_batch], num_items)
    assert loss == pytest.approx(reference_loss, abs=1e-5)
    assert grads.keys() == reference_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, reference_grads[name], atol=1e-5), name


@pytest.mark.parametrize("masks", [True, False], ids=["per-row mask", "positions shared by the rows"])
def test_the_head_on_supervised_positions_only_keeps_the_step(samples_and_model, monkeypatch, masks):
    samples, pad, model = samples_and_model
    if not masks:  # an older transformers that slices only by positions common to every row
        monkeypatch.setattr(kept_logits, "_transformers_slicer", lambda: None)
    assert kept_logits.masks_supported() == masks
    lengths = [len(s["input_ids"]) for s in samples]
    num_items = torch.tensor(sum(int((s["labels"][1:] != -100).sum()) for s in samples))
    halves = [samples[:4], samples[4:]]
    padded = [PaddingCollator(pad)(half) for half in halves]
    packed = [BatchPackingCollator(pad, -(-max(lengths) // 64) * 64)(half) for half in halves]
    reference_loss, reference = _step(model, padded, num_items)
    for batches in (padded, packed):
        loss, grads = _step(model, batches, num_items, loss_of=_kept_loss)
        assert loss == pytest.approx(reference_loss, abs=1e-5)
        assert grads.keys() == reference.keys()
        for name, grad in grads.items():
            assert torch.allclose(grad, reference[name], atol=1e-5), name


def test_the_trainer_runs_the_head_on_supervised_positions_in_training(samples_and_model, tmp_path):
    samples, pad, model = samples_and_model
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = VlmTrainer(model=model, args=args, stage=StageConfig())
    batch = PaddingCollator(pad)(samples[:4])
    num_items = torch.tensor(int((batch["labels"][:, 1:] != -100).sum()))
    seen = []
    hook = model.register_forward_hook(lambda m, a, kw, out: seen.append(kw.get("logits_to_keep")), with_kwargs=True)
    try:
        with torch.no_grad():
            expected = model(**batch, num_items_in_batch=num_items).loss
            trained = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
            model.eval()
            evaluated = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
    finally:
        model.train()
        hook.remove()
    assert trained.item() == pytest.approx(expected.item(), abs=1e-6)
    assert evaluated.item() == pytest.approx(expected.item(), abs=1e-6)
    kept = seen[1]
    assert kept is not None and kept.dtype == torch.bool and int(kept.sum()) == int(num_items)
    assert seen[2] is None  # evaluation keeps every position's logits
