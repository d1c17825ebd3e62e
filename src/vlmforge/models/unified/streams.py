"""Substreams: the tokens of one modality, gathered out of their rows in order and put back afterwards.

The training path runs each split layer on its own modality's substream only, so no compute goes to tokens
whose outputs would be dropped. A substream keeps each token's original position id, and its order is the
row's order, so causal attention inside it is causal attention over that modality in the row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Substream:
    """``index[b, j]``: where the j-th selected token of row b sits in the row; ``valid[b, j]``: False past the
    row's last selected token (those slots are padding of the substream)."""

    index: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def of(cls, select: torch.Tensor) -> Substream:
        """The substream of the tokens where ``select`` [batch, seq] is True."""
        counts = select.sum(dim=1)
        length = int(counts.max()) if select.numel() else 0
        # A stable sort puts the selected positions first, in their original order.
        order = torch.sort((~select).to(torch.int8), dim=1, stable=True).indices[:, :length]
        valid = torch.arange(length, device=select.device)[None, :] < counts[:, None]
        return cls(index=order, valid=valid)

    @property
    def length(self) -> int:
        return self.index.shape[1]

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` [batch, seq, ...] -> [batch, length, ...] (padding slots hold other tokens of the row)."""
        index = self.index
        if values.dim() > 2:
            index = index.view(*index.shape, *([1] * (values.dim() - 2))).expand(-1, -1, *values.shape[2:])
        return torch.gather(values, 1, index)

    def scatter(self, full: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        """A copy of ``full`` with this substream's tokens replaced by ``part`` (out of place, for autograd)."""
        rows = torch.arange(full.shape[0], device=full.device)[:, None].expand_as(self.index)
        return full.index_put((rows[self.valid], self.index[self.valid]), part[self.valid])
