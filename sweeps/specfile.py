"""Reading a spec file safely: bounded in size and in what YAML aliases can expand to.

YAML anchors and aliases share nodes, so a 1 KB file can describe a document of billions of
values (an "alias bomb"); PyYAML builds it cheaply as shared objects, but everything that walks
the spec afterwards (the JSON round trip that copies it, validation, the MLflow record) expands
it. So the composed node graph is measured, counting every alias as the whole subtree it
stands for, and refused above `MAX_NODES` before anything walks it; a recursive alias is
refused too. Files over `MAX_BYTES` are refused before they are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sweeps.overrides import TOP_KEYS, SpecError

MAX_BYTES = 1_000_000  # the largest shipped spec is ~4 KB
MAX_NODES = 100_000  # scalars, lists and mappings after expanding every alias


def _expanded_size(root: yaml.Node, path: Path) -> int:
    """Nodes in the document with every alias expanded, memoised per shared node; raises a
    SpecError once the count passes MAX_NODES or when an alias contains itself."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise SpecError(f"{path}: a YAML alias refers to itself (recursive anchor)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > MAX_NODES:
            raise SpecError(
                f"{path}: YAML aliases expand to more than {MAX_NODES:,} values "
                "(an alias bomb?); write the spec out without nested aliases"
            )
        sizes[key] = total
        return total

    return size(root)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The raw spec mapping of a YAML file, or a SpecError naming the path."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"spec file not found: {path}")
    if not path.is_file():
        raise SpecError(f"spec file {path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SpecError(f"spec file {path}: {size:,} bytes, over the {MAX_BYTES:,}-byte limit")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"spec file {path}: cannot read it ({exc})") from None
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raw = None
            else:
                _expanded_size(node, path)
                raw = loader.construct_document(node)
        finally:
            loader.dispose()
    except RecursionError:
        raise SpecError(f"{path}: YAML nested too deeply") from None
    except yaml.YAMLError as exc:
        one_line = " ".join(str(exc).split())
        raise SpecError(f"{path}: not valid YAML ({one_line})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a mapping of {', '.join(TOP_KEYS)}")
    return raw


__all__ = ["MAX_BYTES", "MAX_NODES", "read_spec_file"]
