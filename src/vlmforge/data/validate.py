"""Check one LLaVA record and normalise it the Bunny way (``<image>`` at the start of its turn, then a newline).

Error codes (``DataError.code``): ``bad_record`` (not an object / bad ``image`` field), ``bad_conversation``
(empty, wrong roles, not alternating, not ending with gpt, non-text value, ``<image>`` in a gpt turn),
``image_count_mismatch`` (``<image>`` markers in human turns != number of images), ``missing_image``,
``missing_embedding`` (an ``image_embedding`` id absent from the embedding store).

An image is either a file (``image``) or a precomputed embedding (``image_embedding``: an id in an embedding store,
as Unicorn's text-only records carry); a record has one kind or the other.
"""

from __future__ import annotations

import copy
from pathlib import Path

from vlmforge.errors import DataError

IMAGE_TOKEN = "<image>"  # the marker in records; same string as the LLaVA processor's image token
EMBEDDING_FIELD = "image_embedding"
ROLES = ("human", "gpt")


def record_images(record: dict, where: str = "record") -> list[str]:
    """The record's image paths as a list (``image`` may be absent, one string, or a list of strings)."""
    image = record.get("image")
    if image is None:
        return []
    images = [image] if isinstance(image, str) else image
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        raise DataError(where, "'image' must be a path or a list of paths", code="bad_record")
    return images


def record_embedding(record: dict, where: str = "record") -> str | None:
    """The record's ``image_embedding`` id (one image slot filled from an embedding store), or None."""
    value = record.get(EMBEDDING_FIELD)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise DataError(where, f"'{EMBEDDING_FIELD}' must be a non-empty id string", code="bad_record")
    if record.get("image") is not None:
        raise DataError(where, f"a record has 'image' or '{EMBEDDING_FIELD}', not both", code="bad_record")
    return value


def image_paths(record: dict, image_folder: str | Path | None, where: str = "record") -> list[Path]:
    """Image paths resolved against ``image_folder`` (absolute paths are kept as they are)."""
    folder = Path(image_folder) if image_folder is not None else Path()
    return [folder / name for name in record_images(record, where)]


def _bunny_image_first(value: str) -> str:
    count = value.count(IMAGE_TOKEN)
    if not count:
        return value
    return f"{IMAGE_TOKEN}\n" * count + value.replace(IMAGE_TOKEN, "").strip()


def _check_turns(conversations, where: str) -> None:
    def bad(reason: str) -> DataError:
        return DataError(where, reason, code="bad_conversation")

    if not isinstance(conversations, list) or not conversations:
        raise bad("'conversations' must be a non-empty list of turns")
    for index, turn in enumerate(conversations):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES:
            raise bad(f"turn {index} must be {{'from': 'human'|'gpt', 'value': ...}}")
        if not isinstance(turn.get("value"), str):
            raise bad(f"turn {index} has no text 'value'")
        expected = ROLES[index % 2]
        if turn["from"] != expected:
            raise bad(f"turn {index} is from '{turn['from']}' but turns must alternate human, gpt, human, ...")
        if turn["from"] == "gpt" and IMAGE_TOKEN in turn["value"]:
            raise bad(f"turn {index}: {IMAGE_TOKEN} may appear only in human turns")
    if conversations[-1]["from"] != "gpt":
        raise bad("the conversation must end with a gpt turn (nothing to learn otherwise)")


def validate_record(record: dict, where: str, image_folder: str | Path | None = None, embeddings=None) -> dict:
    """Return a normalised copy of ``record`` or raise :class:`DataError` naming ``where``.

    Text-only records (no ``image`` and no ``<image>``) are valid. Image files are checked for existence only;
    decoding them is :func:`vlmforge.data.images.load_image`'s job, at load time. ``embeddings`` (anything
    supporting ``id in embeddings``) checks that an ``image_embedding`` id exists.
    """
    if not isinstance(record, dict):
        raise DataError(where, "a record must be a JSON object", code="bad_record")
    _check_turns(record.get("conversations"), where)
    paths = image_paths(record, image_folder, where)
    embedding = record_embedding(record, where)
    markers = sum(turn["value"].count(IMAGE_TOKEN) for turn in record["conversations"])
    if markers != len(paths) + (embedding is not None):
        raise DataError(
            where,
            f"{markers} {IMAGE_TOKEN} marker(s) in human turns but {len(paths) + (embedding is not None)} image(s)",
            "image_count_mismatch",
        )
    if embedding is not None and embeddings is not None and embedding not in embeddings:
        raise DataError(where, f"no embedding for id {embedding!r} in the embedding store", code="missing_embedding")
    for path in paths:
        if not path.is_file():
            raise DataError(where, f"image file {path} does not exist", code="missing_image")
    out = copy.deepcopy(record)
    for turn in out["conversations"]:
        turn["value"] = _bunny_image_first(turn["value"])
    return out
