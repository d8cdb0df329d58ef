"""Tune's storage on a local disk, every file written atomically.

Ray Tune copies a trial's results, params and checkpoints and the experiment snapshot to the
sweep's storage by opening each destination file for writing and streaming into it. On a full
disk that leaves them cut short: seen here, `result.json` and `params.json` of every trial at
0 bytes and the experiment snapshot truncated, so `headsweep resume` could not even restore the
run after the space was freed. Handed to Tune as its `storage_filesystem`, this filesystem
writes each file under a private name beside it and renames it into place only once it was
written whole: a failed write leaves the previous version (or nothing), never half a file, and
a later sync writes it again. Reads and everything else are pyarrow's local filesystem.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs


class _WholeOrNothing:
    """A binary file object written to a temporary name; `close` renames it into place, unless
    a write failed, when the temporary file is removed instead."""

    def __init__(self, path: str) -> None:
        directory, name = os.path.split(path)
        fd, self._tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.", suffix=".part")
        self._file = os.fdopen(fd, "wb")
        self._path = path
        self._failed = False
        self.closed = False

    def _guard(self, call: Any, *args: Any) -> Any:
        """`call(*args)`; on failure the temporary file goes at once (pyarrow may never close a
        stream whose write failed) and the destination keeps what it had."""
        try:
            return call(*args)
        except BaseException:
            self._failed = True
            self.closed = True
            with contextlib.suppress(OSError):
                self._file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            raise

    def write(self, data: bytes) -> int:
        written: int = self._guard(self._file.write, data)
        return written

    def flush(self) -> None:
        self._guard(self._file.flush)

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        if self.closed:
            return
        self._guard(self._file.close)  # the last buffered bytes: may hit the full disk too
        self.closed = True
        os.replace(self._tmp, self._path)


class AtomicLocalHandler(pafs.FileSystemHandler):
    """pyarrow's local filesystem whose output streams are whole-or-nothing."""

    def __init__(self) -> None:
        self._fs = pafs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(AtomicLocalHandler)

    def get_type_name(self) -> str:
        return "headsweep-atomic-local"

    def normalize_path(self, path: str) -> str:
        return self._fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self._fs.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self._fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the root directory")

    def delete_file(self, path: str) -> None:
        self._fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self._fs.open_input_stream(src) as source, self.open_output_stream(dest, None) as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self._fs.open_input_stream(path)

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self._fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> pa.NativeFile:
        return pa.PythonFile(_WholeOrNothing(path), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> pa.NativeFile:
        return self._fs.open_append_stream(path)


def storage_filesystem(storage: str) -> pafs.FileSystem | None:
    """Tune's filesystem for a sweep's storage: whole-or-nothing writes for a local path; None
    for a URI (s3://, gs://: Tune's own filesystem, whose objects appear whole anyway)."""
    return None if "://" in storage else pafs.PyFileSystem(AtomicLocalHandler())
