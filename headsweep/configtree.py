"""Config trees as plain data: flatten / unflatten dotted keys, merge, the one mechanism that
applies a sweep point to a base config, and typed building of a config dataclass from a tree.

Pure Python (no torch): the sweep driver, the trainables and the analysis all share it.

Compound values have one mechanism, `apply_point`: a point maps dotted keys to values; a mapping
value merges into the section already at that key, anything else replaces it; the `variant` key
holds a point of its own (a bundle of dotted keys across sections), applied after the others.
Named presets (head shapes, view recipes) are data a config class fills in through its
`expand(values, prefix)` hook while it is built.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

VARIANT = "variant"  # a point key whose value bundles dotted keys across sections
BASE, POINT = "base", "point"  # what Tune hands a trial: {"base": tree, "point": {key: value}}

T = TypeVar("T")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted keys (`{"a": {"b": 1}}` -> `{"a.b": 1}`)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{dotted}: '{part}' is both a value and a section")
        node[leaf] = value
    return tree


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def plain(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy as JSON data (tuples become lists)."""
    copied: dict[str, Any] = json.loads(json.dumps(tree))
    return copied


def apply_point(base: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """The config at one point: each dotted key set in order, a mapping value merged into the
    section at that key, then the `variant` bundle (if any) applied the same way."""
    config = plain(base)
    items = [(k, v) for k, v in point.items() if k != VARIANT]
    bundle = point.get(VARIANT)
    if isinstance(bundle, Mapping):
        items += list(bundle.items())
    for key, value in items:
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, Mapping) and isinstance(node.get(leaf), Mapping):
            node[leaf] = merge(node[leaf], value)
        else:
            node[leaf] = value
    return config


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """The nested trial config from what Tune hands a trial: `{"base": ..., "point": ...}`.
    Sweeps stored before that layout handed over the config itself, mapping axes already
    merged and a `variant` bundle still to merge; those resolve too (resume, analysis)."""
    if set(config) == {BASE, POINT}:
        return apply_point(config[BASE], config[POINT])
    tree = dict(config)
    bundle = tree.pop(VARIANT, None)
    return merge(tree, unflatten(bundle)) if bundle else tree


# --------------------------------------------------------------------------- typed building


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # Resolving the string annotations (`from __future__ import annotations`) compiles each one:
    # ~0.7 ms a class, paid ~10 times per config built; the dataclasses never change.
    return typing.get_type_hints(cls)


def build(cls: type[T], raw: Mapping[str, Any], prefix: str = "") -> T:
    """A config dataclass from a nested dict: types coerced, unknown keys refused by name,
    presets filled in by the class's `expand(values, prefix)` hook where it has one."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    assert dataclasses.is_dataclass(cls)
    hints = _type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ValueError(
            f"unknown config key '{prefix}{unknown[0]}' (allowed in "
            f"'{prefix.rstrip('.') or 'config'}': {', '.join(names)})"
        )
    values = dict(raw)
    expand = getattr(cls, "expand", None)
    if expand is not None:
        values = expand(values, prefix)
    kwargs: dict[str, Any] = {}
    for name in names:
        if name not in values:
            continue
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(typing.cast(type, hint), values[name], key + ".")
        else:
            kwargs[name] = coerce(values[name], hint, key)
    return cls(**kwargs)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """One value to the field's declared type (bool, int, float, str, a tuple of them, or one
    of them | None)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and len(args) == 2 and type(None) in args:
        # `X | None`: null (YAML `~`/`null`) means "off"; anything else must be an X.
        inner = args[0] if args[1] is type(None) else args[1]
        return None if value is None else coerce(value, inner, key)
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(
            coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if hint in (int, float) and isinstance(value, float) and not math.isfinite(value):
        # YAML's .inf/.nan parse as floats: refused here, naming the key, rather than as an
        # OverflowError from int() or a NaN that silently passes every range check.
        raise ValueError(f"{key}: expected a finite number, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(hint, types.UnionType):  # pragma: no cover - only `X | None` is supported
        raise TypeError(f"{key}: union types other than X | None are not supported")
    raise TypeError(f"{key}: unsupported config type {hint}")


def as_plain(value: Any) -> Any:
    """Dataclass dicts as JSON-shaped data: tuples become lists."""
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [as_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- value checks


def choice(key: str, value: str, allowed: typing.Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{key}: unknown value {value!r} (allowed: {', '.join(allowed)})")


def check(key: str, ok: bool, need: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{key}: must be {need}, got {value!r}")
