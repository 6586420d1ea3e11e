"""A checkpoint's card: the JSON file beside `<stem>.safetensors` (`<stem>.json`), its known fields and their types.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or not the architecture its card names."""


def card_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


# The card's known fields and their JSON types; other fields are kept as they are.
_NUMBER = (int, float)
CARD_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "dataset": (str,), "sha256": (str,), "optimizer": (str,), "test_set": (str,),
    "torch": (str,), "command": (str,), "seed": (int,), "epochs": (int,), "batch": (int,), "warmup": (int,),
    "lr": _NUMBER, "test_accuracy": _NUMBER, "test_loss": _NUMBER, "train_seconds": _NUMBER,
}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number"}


def check_card(card: object, where: str | os.PathLike = "card") -> dict:
    """Return `card` if it is a JSON object whose known fields have the right types, else raise
    CheckpointError naming `where` and the field."""
    if not isinstance(card, dict):
        raise CheckpointError(f"{where}: a card must be a JSON object {{...}}, not {_json_kind(card)}")
    for key, types in CARD_FIELDS.items():
        if key not in card:
            continue
        v = card[key]
        if isinstance(v, bool) or not isinstance(v, types):  # JSON true/false is no number
            raise CheckpointError(f"{where}: field {key!r} must be {_TYPE_NAMES[types[-1]]}, not {_json_kind(v)}")
    acc = card.get("test_accuracy")
    if acc is not None and not 0 <= acc <= 1:  # also refuses NaN
        raise CheckpointError(f"{where}: field 'test_accuracy' must be a fraction in [0, 1], not {acc!r}")
    sha = card.get("sha256")
    if sha is not None and not (len(sha) == 64 and all(c in "0123456789abcdef" for c in sha.lower())):
        raise CheckpointError(f"{where}: field 'sha256' must be 64 hex digits, not {sha!r}")
    return card


def _json_kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"{str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"the number {v!r}"
    if isinstance(v, str):
        return f"the string {v!r}" if len(v) <= 40 else "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def read_card(path: str | os.PathLike) -> dict:
    """The card beside checkpoint `path` (`<stem>.json`), checked by check_card; {} when there is none.

    Raises CheckpointError, naming the card file, when it is not a readable UTF-8 JSON object with the
    right field types (a folder in its place, no permission, bad bytes, bad JSON, a list, a string seed...).
    """
    cpath = card_path(path)
    if not cpath.exists():
        return {}
    if not cpath.is_file():
        raise CheckpointError(f"{cpath}: the card is {'a folder' if cpath.is_dir() else 'not a regular file'}, "
                              "not a JSON file")
    try:
        text = cpath.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{cpath}: card is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CheckpointError(f"{cpath}: cannot read the card ({e.strerror or e})") from None
    try:
        card = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{cpath}: card is not valid JSON ({e})") from None
    return check_card(card, cpath)
