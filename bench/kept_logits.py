"""A training step with the LM head on every position against only the supervised ones (VlmTrainer's default).

A LLaVA-style batch is mostly image tokens and prompt: the loss reads the logits of the answer tokens alone, so
``logits_to_keep`` (vlmforge.models.kept_logits) skips the rest of the head's matmul, its softmax and their
backward, and the [positions, vocabulary] logits tensor with them. Both arms train the same randomly initialised
LLaVA (a small CLIP tower and a Qwen2 LM with a real vocabulary size) on the same padded batch of LLaVA-shaped
samples: the image's tokens, a prompt, an answer of varying length. The arms take turns over ``--repeats`` rounds;
each reports its median forward + backward time, and the ratio is taken from those two medians. The logits' size
is read from the tensors the step made.

Usage: python bench/kept_logits.py [--vocab 151936] [--hidden 256] [--layers 2] [--image-tokens 576]
[--batch 4] [--repeats 7] [--threads N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

from vlmforge.models.kept_logits import causal_lm_loss, supervised_positions

IMAGE_TOKEN = 1  # any id below the vocabulary size serves: the batch is built by hand


def build_model(vocab: int, hidden: int, layers: int, image_tokens: int) -> LlavaForConditionalGeneration:
    side = int(round(image_tokens**0.5))
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
        image_size=side * 4, patch_size=4,
    )  # fmt: skip
    text = Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=4096, tie_word_embeddings=False,
    )  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN)
    return LlavaForConditionalGeneration(config).train()


def build_batch(model, batch: int, image_tokens: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Padded rows: image tokens, a prompt of 40-80 tokens, an answer of 10-60 labelled tokens."""
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.text_config.vocab_size
    rows = []
    for _ in range(batch):
        prompt = int(torch.randint(40, 81, (1,), generator=gen))
        answer = int(torch.randint(10, 61, (1,), generator=gen))
        ids = torch.cat(
            [torch.full((image_tokens,), IMAGE_TOKEN), torch.randint(2, vocab, (prompt + answer,), generator=gen)]
        )
        labels = ids.clone()
        labels[: image_tokens + prompt] = -100
        rows.append((ids, labels))
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    labels = torch.full((batch, length), -100)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    for i, (ids, row_labels) in enumerate(rows):
        input_ids[i, : len(ids)], labels[i, : len(ids)], attention_mask[i, : len(ids)] = ids, row_labels, 1
    size = model.config.vision_config.image_size
    pixel_values = torch.randn(batch, 3, size, size, generator=gen)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "pixel_values": pixel_values}


def step(model, batch: dict[str, torch.Tensor], kept: bool) -> tuple[float, float, int]:
    """(seconds of forward + backward, loss, bytes of the logits tensor)."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    num_items = (labels[:, 1:] != -100).sum()
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    logits = model(**inputs, logits_to_keep=supervised_positions(labels) if kept else 0).logits
    loss = causal_lm_loss(logits, labels, num_items)
    loss.backward()
    return time.perf_counter() - start, float(loss), logits.element_size() * logits.nelement()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=151936, help="LM vocabulary (Qwen2.5's by default)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--image-tokens", type=int, default=576, help="tokens per image (a square number)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.vocab, args.hidden, args.layers, args.image_tokens)
    batch = build_batch(model, args.batch, args.image_tokens)
    times: dict[str, list[float]] = {"every position": [], "supervised positions": []}
    losses, logits_bytes = {}, {}
    step(model, batch, kept=True)  # warm-up
    for _ in range(args.repeats):
        for name in times:
            seconds, losses[name], logits_bytes[name] = step(model, batch, kept=name == "supervised positions")
            times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    labelled = int((batch["labels"] != -100).sum())
    result = {
        "shape": {"batch": list(batch["input_ids"].shape), "labelled_tokens": labelled, "vocab": args.vocab,
                  "hidden": args.hidden, "layers": args.layers, "threads": torch.get_num_threads()},
        "arms": {name: {"median_s": round(medians[name], 4), "min_s": round(min(times[name]), 4),
                        "max_s": round(max(times[name]), 4), "loss": round(losses[name], 6),
                        "logits_mib": round(logits_bytes[name] / 2**20, 1)} for name in times},
        "speedup": round(medians["every position"] / medians["supervised positions"], 3),
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
