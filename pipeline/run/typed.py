"""Typed configs from plain data: dataclasses filled from nested dicts with checked keys and types.

Hydra hands over untyped dicts; :func:`build_dataclass` turns one into a (frozen) dataclass,
recursing into nested dataclasses, enums, tuples, dicts and optionals, and refuses unknown keys
and wrong types with a ``ValueError`` that names the key path (``stages.top.num_gpus``).
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from enum import Enum
from typing import Any

from models.checks import is_int, is_number


def build_dataclass(cls: type, data: Any, path: str = "") -> Any:
    """Instantiate dataclass ``cls`` from ``data``, checking keys and types recursively."""
    where = path or "config root"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        given = ", ".join(f"{_join(path, str(k))}={data[k]!r}" for k in unknown)
        raise ValueError(f"unknown config key(s) {given}; {where} has only {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], _join(path, f.name))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(qualify(path, str(err), names, cls.__name__)) from err


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


_FIRST_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def qualify(path: str, message: str, names: set[str], class_name: str = "") -> str:
    """A dataclass's validation message with the key path in front.

    A message that starts with one of the class's field ``names`` (``max_batch must be >= 1``,
    ``SamplingOptions.temperature must be ...``) gets the path joined to that name
    (``stages.top.max_batch must be >= 1``); any other gets ``"{path}: "`` in front.
    """
    if class_name and message.startswith(f"{class_name}."):
        message = message[len(class_name) + 1:]
    if not path:
        return message
    first = _FIRST_WORD.match(message)
    if first is not None and first.group() in names:
        return f"{path}.{message}"
    return f"{path}: {message}"


def _convert(hint: Any, value: Any, path: str) -> Any:
    """Check/convert one value against its type hint; ValueError names ``path``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, path)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if len(errors) == 1 else f"{path}: {value!r} matches none of {options}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):  # already built (e.g. parsed before the rest of the config)
            return value
        return build_dataclass(hint, value, path)
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            raise ValueError(f"{path}: {value!r} is not one of {[m.value for m in hint]}") from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {value!r}")
        return tuple(_convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {value!r}")
        key_type, value_type = args
        return {_convert(key_type, k, f"{path}") : _convert(value_type, v, f"{path}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if not is_int(value):
            raise ValueError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if not is_number(value):
            raise ValueError(f"{path}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            number = math.inf
        # no option of a run means anything by inf or nan (durations, timeouts, resources...)
        if not math.isfinite(number):
            raise ValueError(f"{path}={value!r}: expected a finite number")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")
