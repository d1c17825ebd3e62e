"""The own-data template: its ``own_data`` settings (held-out split, kinds, probe, step schedules) and its recipe.

The template is one YAML file with two sections: ``own_data`` (what the command does around training) and
``recipe`` (an ordinary training recipe with ``${...}`` placeholders the command fills in). ``--set KEY=VALUE``
changes either: keys under ``own_data.`` go to the first, every other key to the recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vlmforge.errors import ConfigError
from vlmforge.train.recipe import set_dotted
from vlmforge.train.schedule import StepSchedule

OWN_PREFIX = "own_data."


@dataclass
class OwnDataSettings:
    heldout_fraction: float = 0.1
    heldout_max_images: int | None = 500
    split_seed: int = 0
    group_by: str | None = None
    probe: bool = True
    schedule: dict[str, StepSchedule] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def template_text(path: str | Path | None = None) -> str:
    """The template's YAML: the packaged one, or the file ``path`` (a copy `vlmforge init` wrote, edited)."""
    if path is None:
        return resources.files("vlmforge.owndata").joinpath("own-data.yaml").read_text(encoding="utf-8")
    if not Path(path).is_file():
        raise ConfigError(f"template '{path}' does not exist")
    return Path(path).read_text(encoding="utf-8")


def _checked(data: Any, cls: type, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(f"unknown template key {where}.{unknown[0]}; valid keys here: {', '.join(valid)}")
    return data


def _settings(data: Any) -> OwnDataSettings:
    data = dict(_checked(data or {}, OwnDataSettings, "own_data"))
    schedule = {
        name: StepSchedule(**_checked(spec or {}, StepSchedule, f"own_data.schedule.{name}"))
        for name, spec in (data.pop("schedule", None) or {}).items()
    }
    settings = OwnDataSettings(**data, schedule=schedule)
    if not 0.0 < float(settings.heldout_fraction) < 1.0:
        raise ConfigError(f"own_data.heldout_fraction must be between 0 and 1, got {settings.heldout_fraction}")
    return settings


def load_template(
    text: str, variables: dict[str, str], overrides: list[str] | tuple[str, ...] = ()
) -> tuple[OwnDataSettings, dict[str, Any], list[str]]:
    """(settings, the recipe as plain data with ``variables`` filled in, the overrides meant for the recipe)."""
    for name, value in variables.items():
        text = text.replace("${" + name + "}", str(value))
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"the own-data template is not valid YAML: {err}") from err
    if not isinstance(data, dict) or set(data) - {"own_data", "recipe"} or "recipe" not in data:
        raise ConfigError("the own-data template needs a `recipe:` section (and optionally `own_data:`), nothing else")
    own, recipe_overrides = dict(data.get("own_data") or {}), []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        if key.strip().startswith(OWN_PREFIX):
            set_dotted(own, key.strip().removeprefix(OWN_PREFIX), yaml.safe_load(value))
        else:
            recipe_overrides.append(item)
    return _settings(own), dict(data["recipe"] or {}), recipe_overrides
