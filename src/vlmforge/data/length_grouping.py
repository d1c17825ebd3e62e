"""Length-grouped sampling: batches of samples of similar length, in a seeded, recorded, resumable order.

The grouping is transformers' ``group_by_length`` (``get_length_grouped_indices``: a random permutation cut into
mega-batches, each sorted by length). transformers' own ``LengthGroupedSampler`` draws that permutation from the
global RNG each time it is iterated, so its order depends on what else consumed random numbers before; this
sampler draws it from a generator seeded with (seed, epoch), which makes a resumed run see the same order, and it
shuffles the buckets (the batch-sized slices) among themselves, so that consecutive steps do not run from long to
short samples inside every mega-batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices

from vlmforge.errors import ConfigError, DataError


def length_grouped_order(lengths: Sequence[int], bucket: int, seed: int, epoch: int = 0) -> list[int]:
    """Every index of ``lengths`` once: consecutive slices of ``bucket`` indices hold similar lengths, and the
    slices come in a random order. The same arguments always give the same order."""
    if bucket < 1:
        raise ValueError(f"bucket must be at least 1, got {bucket}")
    if not lengths:
        return []
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    grouped = get_length_grouped_indices(list(lengths), bucket, generator=generator)
    buckets = [grouped[start : start + bucket] for start in range(0, len(grouped), bucket)]
    shuffled = torch.randperm(len(buckets), generator=generator).tolist()
    return [index for b in shuffled for index in buckets[b]]


class LengthGroupedSampler(Sampler[int]):
    """Yields :func:`length_grouped_order` for the current epoch (the Trainer calls :meth:`set_epoch`).

    With ``record`` (a JSONL file), each epoch's order is appended as ``{"epoch", "seed", "bucket", "order"}``
    the first time it is drawn; a resumed run that finds the epoch recorded checks that it draws the same order,
    so a changed data file cannot resume into a different order silently.
    """

    def __init__(self, lengths: Sequence[int], bucket: int, seed: int, record: str | Path | None = None):
        self.lengths, self.bucket, self.seed = list(lengths), bucket, seed
        self.record = Path(record) if record else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        order = length_grouped_order(self.lengths, self.bucket, self.seed, self.epoch)
        if self.record is not None:
            self._check_or_record(order)
        return iter(order)

    def _check_or_record(self, order: list[int]) -> None:
        recorded = recorded_orders(self.record)
        if self.epoch in recorded:
            if recorded[self.epoch] != order:
                raise ConfigError(
                    f"{self.record}: epoch {self.epoch} was recorded with another sample order than this run draws "
                    "(the data or the batch size changed); start the stage again with --force"
                )
            return
        entry = {"epoch": self.epoch, "seed": self.seed, "bucket": self.bucket, "order": order}
        with self.record.open("a") as out:
            out.write(json.dumps(entry) + "\n")


def recorded_orders(path: Path) -> dict[int, list[int]]:
    """Epoch -> order, from a record written by :class:`LengthGroupedSampler` (empty when there is none)."""
    if not path.exists():
        return {}
    orders = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            orders[int(entry["epoch"])] = [int(i) for i in entry["order"]]
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}:{number}", f"not a recorded sample order ({err})", code="bad_order") from err
    return orders
