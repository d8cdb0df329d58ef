"""The override language of sweep specs: `--set KEY=VALUE`, named `profiles`, and `--smoke`.

An override whose first part is a spec key (search.num_samples, resources.cpu, max_failures,
...) changes the spec; `space.KEY` sets (or, with null, removes) an axis; any other key pins a
trial-config key in `base` and removes it from the space if it was swept. `--smoke` pins the
trainable's shrinking overrides over everything, variants included."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from headsweep.configtree import VARIANT, apply_point

# The top-level keys of a spec (sweeps.spec documents each).
TOP_KEYS = (
    "name",
    "description",
    "trainable",
    "base",
    "space",
    "search",
    "scheduler",
    "resources",
    "max_concurrent",
    "max_failures",
    "checkpoint_every",
    "smoke",
    "profiles",
)


class SpecError(ValueError):
    """A spec that cannot run; the message names the key."""


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set key=value` items; values are YAML (numbers, lists, true/false, strings)."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: expected key=value, e.g. train.epochs=2")
        try:
            overrides[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise SpecError(f"--set {key}: cannot parse {text!r} ({exc})") from None
    return overrides


def override(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A raw spec with `--set`-style overrides applied (see the module docstring)."""
    raw = dict(raw)
    for key, value in overrides.items():
        head = key.split(".")[0]
        if head == "space" and "." in key:
            space = dict(raw.get("space") or {})
            axis = key.split(".", 1)[1]
            if value is None:
                space.pop(axis, None)
            else:
                space[axis] = value
            raw["space"] = space
        elif head in TOP_KEYS and head not in ("base", "space"):
            raw = apply_point(raw, {key: value})
        else:
            pinned = key.removeprefix("base.")
            raw["base"] = apply_point(raw.get("base") or {}, {pinned: value})
            raw["space"] = {k: v for k, v in (raw.get("space") or {}).items() if k != pinned}
    return raw


def apply_profiles(raw: Mapping[str, Any], profiles: list[str]) -> dict[str, Any]:
    """The named override sets of the spec's `profiles`, in order."""
    raw = dict(raw)
    table = raw.get("profiles") or {}
    if not isinstance(table, dict):
        raise SpecError("profiles: expected a mapping of profile name to overrides")
    for profile in profiles:
        if profile not in table:
            raise SpecError(
                f"--profile {profile}: unknown profile "
                f"(this spec has: {', '.join(table) or 'none'})"
            )
        if not isinstance(table[profile], dict):
            raise SpecError(f"profiles.{profile}: expected a mapping of dotted keys to values")
        raw = override(raw, table[profile])
    return raw


def pin_smoke(
    base: dict[str, Any], space: dict[str, Any], pinned: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--smoke`: the shrinking keys set in `base` and taken out of every axis and variant, so
    nothing the space sweeps can undo them."""
    base = apply_point(base, pinned)
    space = {k: v for k, v in space.items() if k not in pinned}
    if isinstance(space.get(VARIANT), dict):
        space[VARIANT] = {
            kind: [
                {k: v for k, v in variant.items() if k not in pinned}
                if isinstance(variant, dict)
                else variant
                for variant in values
            ]
            if isinstance(values, list)
            else values
            for kind, values in space[VARIANT].items()
        }
    return base, space
