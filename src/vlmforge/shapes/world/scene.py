"""Sampling scenes, and the rule that keeps train and test apart.

A scene is a set of objects, one per grid cell. Its *canonical key* names what is in it (cell, size, colour,
shape) and ignores how it is drawn (jitter, noise). The split a scene belongs to is a hash of that key, so a test
scene never equals a train scene — in this world or in any other world built with a different seed or size.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from vlmforge.errors import ConfigError
from vlmforge.shapes.world.config import SPLITS, WorldConfig, position_name


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    row: int
    col: int
    # Where the shape sits inside its cell, as a fraction of the free room (0 = top/left edge, 1 = bottom/right).
    dx: float = 0.5
    dy: float = 0.5


@dataclass(frozen=True)
class Scene:
    id: str
    split: str
    objects: tuple[SceneObject, ...]  # sorted row-major, so descriptions list objects in reading order
    seed: int  # drives everything drawn from this scene later (background noise, question choices)

    @property
    def key(self) -> str:
        return canonical_key(self.objects)


def canonical_key(objects: tuple[SceneObject, ...] | list[SceneObject]) -> str:
    parts = sorted(f"{o.row},{o.col},{o.size},{o.color},{o.shape}" for o in objects)
    return ";".join(parts)


def split_of(key: str, test_fraction: float) -> str:
    """Which split a scene belongs to: a stable hash of its canonical key, independent of seed and sizes."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return "test" if bucket < test_fraction else "train"


def position_of(obj: SceneObject, grid: int) -> str:
    return position_name(obj.row, obj.col, grid)


def _sample_objects(rng: random.Random, config: WorldConfig) -> tuple[SceneObject, ...]:
    n = rng.randint(1, config.max_objects)
    cells = sorted(rng.sample(range(config.grid**2), n))
    objects = []
    for cell in cells:
        dx, dy = (rng.random(), rng.random()) if config.jitter else (0.5, 0.5)
        objects.append(
            SceneObject(
                shape=rng.choice(config.shapes),
                color=rng.choice(config.colors),
                size=rng.choice(config.sizes),
                row=cell // config.grid,
                col=cell % config.grid,
                dx=round(dx, 4),
                dy=round(dy, 4),
            )
        )
    return tuple(objects)


def sample_scenes(config: WorldConfig) -> dict[str, list[Scene]]:
    """Draw ``train_size`` + ``test_size`` distinct scenes from one seeded stream, each routed to its split."""
    rng = random.Random(config.seed)
    wanted = {split: config.split_size(split) for split in SPLITS}
    scenes: dict[str, list[Scene]] = {split: [] for split in SPLITS}
    seen: set[str] = set()
    # Generous budget: the default world has ~10^10 scenes, so this only trips when the vocabulary is tiny.
    budget = 50 * sum(wanted.values()) + 1000
    for _ in range(budget):
        if all(len(scenes[s]) >= wanted[s] for s in SPLITS):
            break
        objects = _sample_objects(rng, config)
        # Drawn for every candidate, so the stream does not depend on which candidates get rejected.
        scene_seed = rng.getrandbits(32)
        key = canonical_key(objects)
        split = split_of(key, config.test_fraction)
        if key in seen or len(scenes[split]) >= wanted[split]:
            continue
        seen.add(key)
        scene_id = f"{split}-{len(scenes[split]):06d}"
        scenes[split].append(Scene(id=scene_id, split=split, objects=objects, seed=scene_seed))
    short = {s: f"{len(scenes[s])}/{wanted[s]}" for s in SPLITS if len(scenes[s]) < wanted[s]}
    if short:
        raise ConfigError(
            f"world config: could only find {short} distinct scenes; the vocabulary is too small for the "
            "requested split sizes (add shapes/colors/sizes, raise max_objects or ask for fewer images)"
        )
    return scenes
