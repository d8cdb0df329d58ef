"""CPU clock ticks from /proc (Linux), for the benchmarks' load accounting (benchmarks.run's
OthersCPU, benchmarks.sweep's Load). Standard library only: the sweep benchmark's own processes
must not import torch for it."""

from __future__ import annotations

import contextlib
from pathlib import Path


def busy_ticks() -> int:
    """The machine's busy clock ticks, all CPUs (/proc/stat: all but idle and iowait, steal
    included); OSError where /proc is missing."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split()[1:9]]
    return sum(fields) - fields[3] - fields[4]


def process_ticks(pid: int) -> int:
    """CPU clock ticks (user + system) of one process, all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return sum(int(v) for v in stat.rsplit(")", 1)[1].split()[11:13])


def command_line(pid: int) -> str:
    """A process's command line, its arguments joined by spaces ("" once it has exited)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """pid and its descendants, from /proc/<pid>/task/*/children; a thread or process that
    exits while the tree is read is left out."""
    out = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in children.read_text().split():
                out += descendants(int(child))
    return out


def tree_ticks(pid: int) -> dict[int, int]:
    """process_ticks of pid and every descendant; a process that exits while the tree is
    read is left out (and the whole tree, if pid's own listing fails)."""
    out: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for member in descendants(pid):
            with contextlib.suppress(OSError, ValueError, IndexError):
                out[member] = process_ticks(member)
    return out
