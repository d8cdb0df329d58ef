"""Sweep names and the values spliced into MLflow filter strings.

A sweep name becomes a path component (ray/<sweep>/, tables/<sweep>/, optuna/<sweep>.db) and a
value in MLflow search filters, so it is held to a rule strict enough for both: letters, digits,
'.', '_' and '-', starting with a letter or digit (so never hidden, never read as an option),
without '..'. Torch-free and MLflow-free: the CLI checks names before it loads anything.
"""

from __future__ import annotations

import re

from sweeps.overrides import SpecError

RULE = "1-100 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit, no '..'"
_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def name_problem(name: str) -> str:
    """ "" when `name` is a valid sweep name, else the rule it breaks."""
    if not isinstance(name, str) or not _PATTERN.fullmatch(name) or ".." in name:
        return f"{name!r} is not a valid sweep name: {RULE}"
    return ""


def check_name(name: str, where: str = "--name") -> str:
    """`name`, or a SpecError naming `where` (the option or spec key) and the rule."""
    problem = name_problem(name)
    if problem:
        raise SpecError(f"{where}: {problem}")
    return name


def filter_literal(value: str) -> str:
    """`value` as a string literal of an MLflow search filter.

    MLflow's filter parser strips the surrounding quotes and never unescapes anything inside,
    so a value can only be quoted, never escaped: single quotes, else double quotes when it
    holds a single quote. A value holding both, or a backslash (which the SQL tokenizer reads
    as an escape of the closing quote), cannot be expressed and is refused."""
    if "\\" in value or ("'" in value and '"' in value) or "\n" in value:
        raise SpecError(f"{value!r} cannot be used in an MLflow search filter")
    return f'"{value}"' if "'" in value else f"'{value}'"


def tag_equals(key: str, value: str) -> str:
    """The filter clause `tags.`key` = value` with the value quoted by `filter_literal`."""
    if "`" in key:
        raise SpecError(f"tag key {key!r} cannot be used in an MLflow search filter")
    return f"tags.`{key}` = {filter_literal(value)}"


__all__ = ["RULE", "check_name", "filter_literal", "name_problem", "tag_equals"]
