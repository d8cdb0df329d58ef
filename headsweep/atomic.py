"""The one atomic writer for every results file (tables, summaries, figures, records, checkpoints,
markers): write to a temp file in the target's directory, then rename over the target, so a
reader never sees half a file and a crash leaves the previous version intact."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_with(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call `write(temp_path)` to produce the file, then move it to `path` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_with(path, lambda tmp: Path(tmp).write_text(text))


def write_if_changed(path: str | os.PathLike[str], data: bytes) -> bool:
    """Write only when the content differs, so re-running an analysis leaves files (and their
    modification times) untouched. True when written."""
    target = Path(path)
    if target.exists() and target.read_bytes() == data:
        return False
    write_bytes(target, data)
    return True
