"""What makes a checkpoint *intact*: `manifest.json` beside its files lists each file's size and
SHA-256. The trainable writes it last (so a checkpoint cut short has none or a wrong one), the
trial checks it before loading (`trainables.common.restored_state`), and the driver's pruner
checks the sizes before deleting the checkpoint a newer one supersedes
(`sweeps.checkpoints`). Standard library and pyarrow only: works on local disks and object
stores alike."""

from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import Path

from pyarrow import fs

MANIFEST = "manifest.json"


def write_manifest(directory: str | Path) -> None:
    """List every file of a checkpoint directory about to be handed to Tune."""
    entries = {}
    for path in sorted(Path(directory).iterdir()):
        if path.is_file() and path.name != MANIFEST:
            data = path.read_bytes()
            entries[path.name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (Path(directory) / MANIFEST).write_text(json.dumps(entries, indent=1))


def _read(filesystem: fs.FileSystem, path: str) -> bytes:
    with filesystem.open_input_stream(path) as f:
        return bytes(f.read())


def problem(filesystem: fs.FileSystem, directory: str, full: bool = True) -> str:
    """Why a checkpoint directory is not intact ("" when it is). `full` hashes every file (the
    trial, before loading); otherwise only sizes are compared (the driver, often remotely).
    Checkpoints written before manifests existed pass when their directory exists."""
    directory = directory.rstrip("/")
    try:
        info = filesystem.get_file_info(directory)
        if info.type != fs.FileType.Directory:
            return f"{directory} does not exist"
        try:
            manifest = json.loads(_read(filesystem, posixpath.join(directory, MANIFEST)))
        except FileNotFoundError:
            return ""  # an older checkpoint: loading it is the only check
        for name, expected in manifest.items():
            path = posixpath.join(directory, name)
            found = filesystem.get_file_info(path)
            if found.type != fs.FileType.File:
                return f"{name} is missing"
            if found.size != expected["size"]:
                return f"{name} has {found.size} bytes, {expected['size']} were written"
            if full and hashlib.sha256(_read(filesystem, path)).hexdigest() != expected["sha256"]:
                return f"{name} does not match its checksum"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable ({exc})"
    return ""


def siblings(filesystem: fs.FileSystem, checkpoint: str) -> list[str]:
    """The trial's checkpoint directories (checkpoint_000003, ...), oldest first."""
    trial_dir = posixpath.dirname(checkpoint.rstrip("/"))
    try:
        entries = filesystem.get_file_info(fs.FileSelector(trial_dir))
    except OSError:
        return []
    return sorted(
        entry.path
        for entry in entries
        if entry.type == fs.FileType.Directory and entry.base_name.startswith("checkpoint_")
    )
