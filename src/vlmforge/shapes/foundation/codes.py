"""Object vectors: what the reading phase puts in the image tokens' place (see ``reader``'s module doc).

A patch that holds an object's box centre gets the sum of a fixed random code per content word of the object's
phrase ("small", "red", "circle") and per pair of those words ("red circle", ...); an empty patch gets one shared
"empty" code. Nothing in a vector says where its patch is: the LM reads that from the token's place in the
sequence, as it must with images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import torch

from vlmforge.shapes.foundation.vision import Region, VisionSpec, patch_targets

FILLER_WORDS = frozenset({"a", "an", "the"})


@dataclass
class ObjectCodes:
    """Object vectors kept as their parts: ``codebook[parts[scene, patch]].sum()`` is one patch's vector."""

    codebook: torch.Tensor  # [codes + 1, hidden]; the last row is zeros and pads ``parts``
    parts: torch.Tensor  # [scenes, patches, most parts of one patch], indices into ``codebook``

    @property
    def pad(self) -> int:
        """The index of the codebook's zero row: an absent part."""
        return len(self.codebook) - 1

    def vectors(self, scenes: Sequence[int] | None = None) -> torch.Tensor:
        """[len(scenes), patches, hidden] (all scenes by default)."""
        parts = self.parts if scenes is None else self.parts[list(scenes)]
        return self.codebook[parts].sum(-2)


def _content_words(phrase: str) -> list[str]:
    """The words of an object's phrase that get a code: "a small red circle" -> small, red, circle."""
    return [w for w in phrase.split() if w not in FILLER_WORDS]


def object_codes(
    regions: Sequence[Sequence[Region]],
    vision: VisionSpec,
    hidden_size: int,
    seed: int,
    vocabulary: Sequence[Sequence[Region]] | None = None,
) -> ObjectCodes:
    """Per scene, the parts of one vector per patch token of the vision tower (see the module doc).

    The pair codes make "is there a red circle?" one match rather than a conjunction of two. The codes are drawn
    for the words (and pairs) of ``vocabulary``'s phrases (default: ``regions``), so held-out scenes encoded with
    ``vocabulary=`` the training scenes get the codes the LM was trained on; a word that ``vocabulary`` lacks has
    no code and is left out."""
    phrases, targets = patch_targets(regions, vision)  # phrase 0 is the background
    phrase_words = [_content_words(p) for p in phrases[1:]]
    if vocabulary is None:
        known = phrase_words
    else:  # only which words and pairs occur matters here: they are sorted below
        known = [_content_words(p) for p in {phrase for scene in vocabulary for _, phrase in scene}]
    words = sorted({w for ws in known for w in ws})
    pairs = sorted({pair for ws in known for pair in combinations(ws, 2)})
    generator = torch.Generator().manual_seed(seed)
    word_codes = torch.randn(len(words), hidden_size, generator=generator)
    # A row per patch is drawn and discarded: the pair and empty codes after it, and so saved readers, depend on it.
    torch.randn(targets.shape[1], hidden_size, generator=generator)
    pair_codes = torch.randn(len(pairs), hidden_size, generator=generator)
    empty = torch.randn(hidden_size, generator=generator)
    codebook = torch.cat([word_codes, pair_codes, empty[None], torch.zeros(1, hidden_size)])
    row = {**{w: i for i, w in enumerate(words)}, **{p: len(words) + i for i, p in enumerate(pairs)}}
    empty_row, pad = len(words) + len(pairs), len(codebook) - 1
    per_phrase = [[empty_row]] + [
        [row[w] for w in ws if w in row] + [row[p] for p in combinations(ws, 2) if p in row] for ws in phrase_words
    ]
    width = max(map(len, per_phrase))
    table = torch.tensor([ps + [pad] * (width - len(ps)) for ps in per_phrase])  # [phrases, width]
    return ObjectCodes(codebook, table[targets])  # parts: [scenes, patches, width]


def embed_with_vectors(
    embed: torch.nn.Module, input_ids: torch.Tensor, image_id: int, vectors: torch.Tensor
) -> torch.Tensor:
    """Token embeddings of ``input_ids`` with each ``image_id`` position holding the next patch's vector
    (``vectors``: [batch, patches, hidden], one row per image token in order)."""
    inputs = embed(input_ids)
    return inputs.masked_scatter((input_ids == image_id).unsqueeze(-1), vectors.to(inputs.dtype))
