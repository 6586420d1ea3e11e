"""Command-line options read from the engine's config dataclasses: one place per default.

An `Option` names a (possibly nested) field of a config ("path.beta"); `add_options` adds it to a parser with the
field's type and, in the help, the default read from the config object; `apply_options` returns the config with
the options the user gave (and only those) replaced. Values are checked by the config's own `validate()`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Option:
    flag: str  # "--beta"
    field: str  # "path.beta"
    help: str
    choices: tuple[str, ...] | None = None


def get(cfg: Any, field: str) -> Any:
    for part in field.split("."):
        cfg = getattr(cfg, part)
    return cfg


def put(cfg: Any, field: str, value: Any) -> Any:
    """A copy of the (frozen, nested) dataclass with `field` set to value."""
    head, _, rest = field.partition(".")
    return replace(cfg, **{head: put(getattr(cfg, head), rest, value) if rest else value})


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _type_of(value: Any, cfg: Any, field: str):
    declared = _declared_type(cfg, field)
    if isinstance(value, bool) or declared == "bool":
        return None
    if isinstance(value, tuple):
        return _parse_list
    if isinstance(value, float) or "float" in declared:
        return float
    if isinstance(value, int) or "int" in declared:
        return int
    return str


def _declared_type(cfg: Any, field: str) -> str:
    *parents, name = field.split(".")
    for part in parents:
        cfg = getattr(cfg, part)
    return next((str(f.type) for f in fields(cfg) if f.name == name), "") if is_dataclass(cfg) else ""


def show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def add_options(parser: argparse.ArgumentParser, options: list[Option], base: Any,
                other: tuple[str, Any] | None = None) -> None:
    """Add each option with the default of `base` in its help (and, when it differs, `other`'s: ("literal", cfg))."""
    for o in options:
        value, kind = get(base, o.field), _type_of(get(base, o.field), base, o.field)
        note = f"default {show(value)}"
        if other is not None and get(other[1], o.field) != value:
            note += f"; {other[0]}: {show(get(other[1], o.field))}"
        if kind is None:
            parser.add_argument(o.flag, dest=o.field, action="store_true", default=argparse.SUPPRESS,
                                help=f"{o.help} (off by default)")
        else:
            parser.add_argument(o.flag, dest=o.field, type=kind, choices=o.choices, default=argparse.SUPPRESS,
                                metavar=None if o.choices else o.flag.lstrip("-").split("-")[-1].upper(),
                                help=f"{o.help} ({note})")


def given(args: argparse.Namespace, options: list[Option]) -> dict[str, Any]:
    """The options the user gave, by field."""
    return {o.field: getattr(args, o.field) for o in options if hasattr(args, o.field)}


def apply_options(args: argparse.Namespace, options: list[Option], base: Any) -> Any:
    """`base` with every option the user gave replaced."""
    for field_, value in given(args, options).items():
        base = put(base, field_, value)
    return base
