"""What a shapes world is made of: the vocabulary and the knobs of one world (``WorldConfig``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vlmforge.errors import ConfigError

WORLD_VERSION = 3

ALL_SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
# Saturated, mutually distant colours, all far from the light background so a pixel's colour names its object.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 0),
    "purple": (140, 40, 170),
    "orange": (245, 120, 0),
}
ALL_COLORS = tuple(COLOR_RGB)
# Side of a shape's bounding square as a fraction of its cell's side.
SIZE_FRACTION = {"small": 0.48, "large": 0.86}
ALL_SIZES = tuple(SIZE_FRACTION)
POSITIONS_3X3 = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
TASKS = ("color", "shape", "count", "position", "exist", "mc", "rec")
# Default question mix per image: every task once, and "exist" twice (one "Yes", one "No") so it is balanced.
# Grounding tasks for Genixer (grounding.py): off unless ``questions`` asks for them, so default worlds keep their data.
GROUNDING_TASKS = ("reg", "pointqa", "qcba", "ref_dialogue")
DEFAULT_QUESTIONS = {"color": 1, "shape": 1, "count": 1, "position": 1, "exist": 2, "mc": 1, "rec": 1}
SPLITS = ("train", "test")


def position_name(row: int, col: int, grid: int) -> str:
    """Name of a grid cell: the nine familiar names on a 3x3 grid, "row R column C" (1-based) otherwise."""
    if grid == 3:
        return POSITIONS_3X3[row][col]
    return f"row {row + 1} column {col + 1}"


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


@dataclass
class WorldConfig:
    """Every knob of a shapes world. Same config (seed included) -> byte-identical images and records."""

    seed: int = 0
    train_size: int = 3000
    test_size: int = 300
    image_size: int = 64
    grid: int = 3
    max_objects: int = 4
    shapes: tuple[str, ...] = ALL_SHAPES
    colors: tuple[str, ...] = ALL_COLORS
    sizes: tuple[str, ...] = ALL_SIZES
    background: tuple[int, int, int] = (240, 240, 240)
    # Per-pixel uniform noise amplitude added to the background (0 = flat); shapes stay flat and exact.
    background_noise: int = 0
    # Random offset of each shape inside its cell; boxes are measured on the drawn pixels either way.
    jitter: bool = True
    # Fraction of all possible scenes reserved for the test split (decided by a hash of the scene itself).
    test_fraction: float = 0.1
    questions: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_QUESTIONS))
    # Which caption is the answer in captions.jsonl (both are always stored as fields).
    caption_style: str = "short"
    # Share of the questions in train/instruct_phrased.jsonl asked in another phrasing than their type's template
    # (phrasings.py). The other record files keep the templates; the test split's paraphrased records use
    # held-out phrasings.
    paraphrase: float = 0.5

    def __post_init__(self) -> None:
        # Lists arrive from JSON / YAML; tuples keep the config hashable-looking and read-only in spirit.
        self.shapes, self.colors, self.sizes = tuple(self.shapes), tuple(self.colors), tuple(self.sizes)
        self.background = tuple(self.background)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        def bad(reason: str) -> ConfigError:
            return ConfigError(f"world config: {reason}")

        for name, values, known in (
            ("shapes", self.shapes, ALL_SHAPES),
            ("colors", self.colors, ALL_COLORS),
            ("sizes", self.sizes, ALL_SIZES),
        ):
            if not values:
                raise bad(f"{name} is empty")
            unknown = [v for v in values if v not in known]
            if unknown or len(set(values)) != len(values):
                raise bad(f"{name} must be distinct values from {list(known)}, got {list(values)}")
        if self.grid < 1:
            raise bad(f"grid must be >= 1, got {self.grid}")
        if not 1 <= self.max_objects <= self.grid**2:
            raise bad(f"max_objects must be in 1..{self.grid**2} (one object per cell), got {self.max_objects}")
        if self.image_size < 8 * self.grid:
            raise bad(f"image_size must be >= {8 * self.grid} px for a {self.grid}x{self.grid} grid")
        if self.train_size < 0 or self.test_size < 0:
            raise bad("train_size and test_size must be >= 0")
        if not 0.0 < self.test_fraction < 1.0:
            raise bad(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.background_noise <= 64:
            raise bad(f"background_noise must be in 0..64, got {self.background_noise}")
        unknown_tasks = sorted(set(self.questions) - set(TASKS) - set(GROUNDING_TASKS))
        if unknown_tasks or any(int(n) < 0 for n in self.questions.values()):
            known = [*TASKS, *GROUNDING_TASKS]
            raise bad(f"questions maps tasks {known} to counts >= 0, got {self.questions}")
        if not 0.0 <= self.paraphrase <= 1.0:
            raise bad(f"paraphrase must be in [0, 1], got {self.paraphrase}")
        if self.caption_style not in ("short", "detailed"):
            raise bad(f"caption_style must be 'short' or 'detailed', got {self.caption_style!r}")

    def split_size(self, split: str) -> int:
        return {"train": self.train_size, "test": self.test_size}[split]

    def vocab(self) -> dict[str, list[str]]:
        positions = [position_name(r, c, self.grid) for r in range(self.grid) for c in range(self.grid)]
        return {
            "shapes": list(self.shapes),
            "colors": list(self.colors),
            "sizes": list(self.sizes),
            "positions": positions,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("shapes", "colors", "sizes", "background"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"world config: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


def chance_level(task: str, config: WorldConfig) -> float:
    """Accuracy of an uninformed guess at ``task`` in a world built with ``config``.

    rec is scored by Acc@0.5 (IoU >= 0.5); a guess of a random cell with a random size hits only when both are
    right (a small box inside a large one has IoU ~0.3), so chance is estimated as 1 / (cells * sizes).
    count is a guess among 1..max_objects (the per-shape variant is skewed towards 1; see docs/world.md).
    """
    levels = {
        "color": 1 / len(config.colors),
        "shape": 1 / len(config.shapes),
        "count": 1 / config.max_objects,
        "position": 1 / config.grid**2,
        "exist": 0.5,
        "mc": 0.25,
        "rec": 1 / (config.grid**2 * len(config.sizes)),
    }
    if task not in levels:
        raise ConfigError(f"unknown world task {task!r}; known: {list(levels)}")
    return levels[task]
