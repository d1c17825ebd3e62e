"""The shapes world: procedural scenes rendered with PIL, exact annotations, written as LLaVA records."""

from vlmforge.shapes.world.build import WorldPaths, build_world
from vlmforge.shapes.world.config import TASKS, WorldConfig, chance_level
from vlmforge.shapes.world.render import render_scene
from vlmforge.shapes.world.scene import Scene, SceneObject, sample_scenes

__all__ = [
    "TASKS",
    "Scene",
    "SceneObject",
    "WorldConfig",
    "WorldPaths",
    "build_world",
    "chance_level",
    "render_scene",
    "sample_scenes",
]
