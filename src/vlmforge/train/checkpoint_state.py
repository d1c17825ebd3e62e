"""Optimizer, scheduler and RNG state for resumable checkpoints, as safetensors + JSON instead of pickles.

The HF Trainer stores these with ``torch.save`` (``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``,
``training_args.bin``). vlmforge saves nothing as a pickle, so tensors go to safetensors and everything else to
JSON. DeepSpeed and FSDP write their own sharded formats; those runs keep the Trainer's path.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
SCHEDULER_META = "scheduler.json"


def save_optimizer(optimizer: torch.optim.Optimizer, scheduler, out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, out / OPTIMIZER_TENSORS)
    (out / OPTIMIZER_META).write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))
    if scheduler is not None:
        (out / SCHEDULER_META).write_text(json.dumps(scheduler.state_dict()))


def has_optimizer_state(checkpoint: str | Path) -> bool:
    return (Path(checkpoint) / OPTIMIZER_TENSORS).exists()


def load_optimizer(optimizer: torch.optim.Optimizer, scheduler, checkpoint: str | Path, device) -> None:
    root = Path(checkpoint)
    meta = json.loads((root / OPTIMIZER_META).read_text())
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in load_file(root / OPTIMIZER_TENSORS, device=str(device)).items():
        index, key = name.split(".", 1)
        # Adam's step counter lives on the CPU whatever the parameter's device (torch's own convention).
        state.setdefault(int(index), {})[key] = tensor.cpu() if key == "step" else tensor
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scheduler is not None and (root / SCHEDULER_META).exists():
        scheduler.load_state_dict(json.loads((root / SCHEDULER_META).read_text()))


def _rng_name(process_index: int, world_size: int) -> str:
    return "rng_state" if world_size <= 1 else f"rng_state_{process_index}"


def save_rng_state(out_dir: str | Path, process_index: int = 0, world_size: int = 1) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    numpy_state = np.random.get_state()
    tensors = {"cpu": torch.random.get_rng_state(), "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64))}
    if torch.cuda.is_available():
        tensors.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    python_version, python_state, python_gauss = random.getstate()
    meta = {
        "python": [python_version, list(python_state), python_gauss],
        "numpy": [numpy_state[0], int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
    }
    name = _rng_name(process_index, world_size)
    save_file(tensors, out / f"{name}.safetensors")
    (out / f"{name}.json").write_text(json.dumps(meta))


def load_rng_state(checkpoint: str | Path, process_index: int = 0, world_size: int = 1) -> bool:
    """Restore the RNG states saved by :func:`save_rng_state`; False when the checkpoint has none of ours."""
    root, name = Path(checkpoint), _rng_name(process_index, world_size)
    if not (root / f"{name}.safetensors").exists():
        return False
    tensors = load_file(root / f"{name}.safetensors")
    meta = json.loads((root / f"{name}.json").read_text())
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.random.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return True
