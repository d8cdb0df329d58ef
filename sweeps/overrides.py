"""The override language of sweep specs: `--set KEY=VALUE`, named `profiles`, and `--smoke`.

An override whose first part is a spec key (search.num_samples, resources.cpu, max_failures,
...) changes the spec; `space.KEY` sets (or, with null, removes) an axis; any other key pins a
trial-config key in `base` and removes it from the space if it was swept; an explicit `--set`
of a key that an axis would still overwrite (inside a swept mapping, or set by a variant) is
refused with the `space.` override that does it. `--smoke` pins the trainable's shrinking
overrides over the spec, variants included, but never over an explicit `--set`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
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


def related(a: str, b: str) -> bool:
    """Dotted keys that overlap: equal, or one inside the other (model.head, model.head.name)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def check_pin(pinned: str, space: Mapping[str, Any]) -> None:
    """Refuse an explicit `--set` that a swept axis would overwrite in every trial (a key inside
    an axis, or a key a variant sets), or that would leave an axis inside it sweeping. A key
    equal to an axis is fine: pinning it removes the axis."""
    for axis, dist in space.items():
        if axis == VARIANT:
            lists = dist.values() if isinstance(dist, dict) else []
            for variant in (v for values in lists if isinstance(values, list) for v in values):
                for key in variant if isinstance(variant, dict) else ():
                    if related(key, pinned):
                        raise SpecError(
                            f"--set {pinned}: the swept '{VARIANT}' axis sets {key} in its "
                            f"variants and would overwrite it; change the variants with "
                            f"--set 'space.{VARIANT}={{grid: [...]}}'"
                        )
        elif pinned.startswith(axis + "."):
            raise SpecError(
                f"--set {pinned}: '{axis}' is a swept axis and would overwrite it in every "
                f"trial; set the axis (--set 'space.{axis}={{grid: [...]}}') or pin it whole "
                f"(--set '{axis}=...')"
            )
        elif axis.startswith(pinned + "."):
            raise SpecError(
                f"--set {pinned}: the axis '{axis}' inside it is swept; set it with "
                f"--set 'space.{axis}=...' or drop it with --set space.{axis}=null"
            )


def explicit_keys(overrides: Mapping[str, Any]) -> set[str]:
    """The trial-config keys an override set pins or sweeps (what `--smoke` must not undo)."""
    keys = set()
    for key, value in overrides.items():
        head = key.split(".")[0]
        if head == "space" and "." in key:
            if value is not None:
                keys.add(key.split(".", 1)[1])
        elif head not in TOP_KEYS or head == "base":
            keys.add(key.removeprefix("base."))
    return keys


def override(
    raw: dict[str, Any], overrides: Mapping[str, Any], explicit: bool = False
) -> dict[str, Any]:
    """A raw spec with `--set`-style overrides applied (see the module docstring). explicit:
    the user's own `--set`, refused where an axis would silently overwrite it (check_pin)."""
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
            if explicit:
                check_pin(pinned, raw.get("space") or {})
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


def apply_smoke(
    base: dict[str, Any],
    space: dict[str, Any],
    pins: Mapping[str, Any],
    overrides: Mapping[str, Any],
    notes: list[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--smoke`'s pins over the spec (`pin_smoke`), except the keys the user's --set names:
    those are kept, with a note saying so."""
    explicit = explicit_keys(overrides)
    kept = {}
    for key, value in pins.items():
        if any(related(key, mine) for mine in explicit):
            notes.append(f"--smoke: keeping your --set for {key} (smoke would set {value!r})")
        else:
            kept[key] = value
    return pin_smoke(base, space, kept)


def pin_smoke(
    base: dict[str, Any], space: dict[str, Any], pinned: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--smoke`: the shrinking keys set in `base` and taken out of every axis and variant, so
    nothing the space sweeps can undo them."""
    base = apply_point(base, pinned)
    space = {k: v for k, v in space.items() if k not in pinned}

    def smaller(key: str, value: Any) -> bool:
        """A variant's own value already at or under the smoke size (an untrained control's
        train.epochs 0, a smaller batch) is kept: --smoke shrinks, never grows."""
        limit = pinned.get(key)
        numbers = (int, float)
        return (
            isinstance(value, numbers)
            and isinstance(limit, numbers)
            and not isinstance(value, bool)
            and value <= limit
        )

    if isinstance(space.get(VARIANT), dict):
        space[VARIANT] = {
            kind: [
                {k: v for k, v in variant.items() if k not in pinned or smaller(k, v)}
                if isinstance(variant, dict)
                else variant
                for variant in values
            ]
            if isinstance(values, list)
            else values
            for kind, values in space[VARIANT].items()
        }
    return base, space


# --smoke runs a trial in seconds on whatever machine runs it: one CPU and no GPU (a GPU spec's
# 4 CPU + 0.5 GPU would never start on a laptop); `--set resources.gpu=1` smoke-tests the GPU.
SMOKE_RESOURCES = {"cpu": 1, "gpu": 0}


def smoke_resources(raw: Any, overrides: Mapping[str, Any], notes: list[str]) -> Any:
    """The spec's `resources` at smoke size, keeping what --set gave (with a note)."""
    if raw is not None and not isinstance(raw, dict):
        return raw  # refused with its reason by _resources
    out = dict(raw or {})
    for key, value in SMOKE_RESOURCES.items():
        if f"resources.{key}" in overrides:
            notes.append(f"--smoke: keeping your --set for resources.{key}")
        else:
            out[key] = value
    return out


DATA_ROOT = "data.root"


def absolute_data_roots(raw: dict[str, Any], cwd: Path) -> tuple[dict[str, Any], list[str]]:
    """The spec with relative `data.root` values (in base, a `data.root` grid axis, variants)
    made absolute against `cwd`, where the user ran the command: Tune runs every trial in a
    directory of its own, where `./data` would be a fresh, empty folder per trial. URIs and `~`
    paths are kept. Returns the new spec and one note per rewritten value."""
    notes: list[str] = []

    def fix(value: Any) -> Any:
        if not isinstance(value, str) or "://" in value or value.startswith("~"):
            return value
        path = Path(value)
        if path.is_absolute():
            return value
        resolved = str((cwd / path).resolve())
        notes.append(f"data.root {value!r} is relative: using {resolved}")
        return resolved

    raw = dict(raw)
    base, space = raw.get("base"), raw.get("space")
    if isinstance(base, dict) and isinstance(base.get("data"), dict) and "root" in base["data"]:
        raw["base"] = {**base, "data": {**base["data"], "root": fix(base["data"]["root"])}}
    if not isinstance(space, dict):
        return raw, notes
    space = dict(space)
    axis = space.get(DATA_ROOT)
    if isinstance(axis, dict) and isinstance(axis.get("grid"), list):
        space[DATA_ROOT] = {**axis, "grid": [fix(v) for v in axis["grid"]]}
    if isinstance(space.get(VARIANT), dict):
        space[VARIANT] = {
            kind: [
                {**v, DATA_ROOT: fix(v[DATA_ROOT])} if isinstance(v, dict) and DATA_ROOT in v else v
                for v in values
            ]
            if isinstance(values, list)
            else values
            for kind, values in space[VARIANT].items()
        }
    raw["space"] = space
    return raw, list(dict.fromkeys(notes))
