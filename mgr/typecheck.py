"""Frozen config dataclasses from JSON that may have been edited, truncated or crafted.

`config.json` of a run is read back on `--resume`. A dataclass accepts any value for any field,
so a field of the wrong type ("steps": "500", "pretrained": "no", "data": 3) would otherwise slip
past validation and fail later, mid-run, with an unrelated traceback. Here every field is checked
against its annotation first, and the error names the file, the field, the value and the type.
Kept rather than pydantic: the trainer imports only torch, torchvision and numpy, so it runs on a
GPU box that has nothing else.
"""
from __future__ import annotations

import dataclasses
import types
import typing


class ConfigError(ValueError):
    pass


def from_json(cls, data, where: str, required: tuple[str, ...] = ()):
    """cls(**data) after checking names and types; nested dataclass fields are built the same way.
    Fields missing from `data` take their defaults (a config written before a field existed),
    except those in `required`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object of {cls.__name__} fields, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown config field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{where}: config lacks the field(s) {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = from_json(hint, value, f"{where}: field {name!r}")
            continue
        if not _matches(value, hint):
            raise ConfigError(f"{where}: field {name!r} is {value!r} ({type(value).__name__}), "
                              f"expected {_describe(hint)}")
        values[name] = tuple(value) if typing.get_origin(hint) is tuple else value  # JSON has no tuples
    try:
        return cls(**values)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from e


def _matches(value, hint) -> bool:
    if hint is typing.Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # JSON writes 1.0 as 1.0, but a hand-edited file may say 1
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, list) and all(any(_matches(v, a) for a in args) if args else True for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # an annotation this checker does not know: the dataclass's own validation decides


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))
