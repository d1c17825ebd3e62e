"""Run the modality-conflict analysis over several saved unified models on identical batches, resumably.

Each model's result goes to ``OUT/models/NAME.json`` with what it was made from (model folder, records, batch
settings, layers, and a hash of the batches' token ids and labels); a rerun reuses a result whose inputs are
unchanged. Models whose tokenizers or image tokenizers encode the records differently are refused, since their
conflicts would not be measured on the same data.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vlmforge.errors import ConfigError
from vlmforge.train.conflict import WEIGHT_TYPES, gradient_conflict, plot_conflict, shared_layer_indices
from vlmforge.train.conflict_data import conflict_batches, first_turns, pick


@dataclass
class ConflictInputs:
    records: str
    images: str | None
    text: str | None
    batches: int
    batch_size: int
    seed: int

    def identity(self) -> dict[str, Any]:
        resolved = {k: str(Path(v).resolve()) for k, v in (("records", self.records), ("images", self.images),
                                                            ("text", self.text)) if v}  # fmt: skip
        return {**asdict(self), **resolved}


def _config(path: Path):
    from transformers import AutoConfig

    from vlmforge.models import register_models
    from vlmforge.models.unified import MODEL_TYPE

    register_models()
    config = AutoConfig.from_pretrained(path)
    if config.model_type != MODEL_TYPE:
        raise ConfigError(f"'{path}' is a {config.model_type} model, not a unified (Uni-X) model")
    return config


def _batches(processor, inputs: ConflictInputs, device: torch.device) -> tuple[list[dict], list[dict]]:
    count = inputs.batches * inputs.batch_size
    multimodal = pick(first_turns(inputs.records, inputs.images), count, inputs.seed, inputs.records)
    text = pick(first_turns(inputs.text), count, inputs.seed, inputs.text) if inputs.text else multimodal
    sides = (conflict_batches(text, processor, inputs.batch_size, False),
             conflict_batches(multimodal, processor, inputs.batch_size, True))  # fmt: skip
    return tuple([{k: v.to(device) for k, v in batch.items()} for batch in side] for side in sides)  # type: ignore[return-value]


def _digest(batches: list[dict]) -> str:
    h = hashlib.sha256()
    for batch in batches:
        for key in ("input_ids", "labels"):
            h.update(batch[key].cpu().numpy().tobytes())
    return h.hexdigest()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)  # a kill leaves the old file or the new one, never half of one


def _measure(path: Path, inputs: ConflictInputs, layers: list[int], device: torch.device) -> tuple[dict, str]:
    from vlmforge.models.unified.chat_processor import load_for_chat

    model, processor = load_for_chat(path)
    model = model.to(device)
    text, multimodal = _batches(processor, inputs, device)
    return gradient_conflict(model, text, multimodal, layers, inputs.seed), _digest(text + multimodal)


def _summary(result: dict) -> dict:
    by_type = {kind: sum(values) / len(values) for kind, values in result["conflict"].items()}
    return {"mean": sum(by_type.values()) / len(by_type), "by_type": by_type}


def run_conflict(
    models: dict[str, Path],
    inputs: ConflictInputs,
    out: Path,
    choose_layers: Callable[[dict[str, list[int]]], list[int]],
    device: str | None = None,
) -> dict:
    """Conflict per model on the same batches and layer indices (``choose_layers`` gets each model's shared
    layers); writes ``conflict.json`` and ``conflict.png`` into ``out`` and returns the former's content."""
    from tqdm.auto import tqdm

    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    configs = {name: _config(path) for name, path in models.items()}
    shared = {name: shared_layer_indices(c, c.text_config.num_hidden_layers) for name, c in configs.items()}
    layers = choose_layers(shared)
    (out / "models").mkdir(parents=True, exist_ok=True)
    results, digests = {}, {}
    for name, path in tqdm(models.items(), desc="conflict", unit="model"):
        identity = {"model": str(path.resolve()), **inputs.identity(), "layers": layers}
        file = out / "models" / f"{name}.json"
        saved = json.loads(file.read_text()) if file.is_file() else {}
        if saved.get("identity") == identity:
            results[name], digests[name] = saved["result"], saved["batches_sha256"]
            continue
        results[name], digests[name] = _measure(path, inputs, layers, target)
        _write_json(file, {"identity": identity, "batches_sha256": digests[name], "result": results[name]})
    if len(set(digests.values())) > 1:
        raise ConfigError(
            f"the models encode the records differently ({', '.join(models)}): their tokenizers or image "
            "tokenizers differ, so their conflicts would not be measured on the same batches"
        )
    report = {
        "layers": layers,
        "weight_types": list(WEIGHT_TYPES),
        "inputs": inputs.identity(),
        "models": {name: str(path) for name, path in models.items()},
        "summary": {name: _summary(result) for name, result in results.items()},
        "results": results,
    }
    _write_json(out / "conflict.json", report)
    plot_conflict(results, out / "conflict.png")
    return report
