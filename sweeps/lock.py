"""One driver per sweep: a lock file with a heartbeat in the sweep's storage directory.

`run` and `resume` hold `<storage>/<sweep>/.headsweep-driver.json` for as long as the driver
lives. It is created whole and hard-linked into place, which fails when it exists (atomic like
O_EXCL, on local disks and on NFS alike, so two drivers started at the same moment cannot both
win), holds who took it (pid, host, the process's identity, command, start time) and is
rewritten every `interval` seconds. A lock belongs to a dead driver (kill -9, a lost node) when
its holder ran on this host and that process is gone (or the pid now names another process:
the identity is the boot id and the process's start time), at once; on another host, when its
heartbeat is older than `MISSED` intervals. `resume` then takes it over, `status` reports the
sweep as crashed. Object stores (s3://, gs://) have no O_EXCL; there the lock is
write-then-read-back, which catches all but a race within one heartbeat.

Only the standard library (and pyarrow for URIs): `status` and `list` import this without torch
or Ray.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sweeps.locations import SweepError

log = logging.getLogger(__name__)

LOCK_FILE = ".headsweep-driver.json"
MISSED = 4  # heartbeats a lock may miss before it counts as a dead driver's
HEARTBEAT_TAG = "headsweep.heartbeat"  # the parent run's copy: epoch seconds of the last beat
INTERVAL_TAG = "headsweep.heartbeat_s"


def heartbeat_interval() -> float:
    """Seconds between heartbeats ($HEADSWEEP_HEARTBEAT_S, default 30; tests use 1)."""
    try:
        return max(0.2, float(os.environ.get("HEADSWEEP_HEARTBEAT_S", "30")))
    except ValueError:
        return 30.0


def process_identity(pid: int) -> str:
    """What tells a process from a later one with the same pid: this boot's id and the
    process's start time in clock ticks (/proc); "" where /proc cannot say (not Linux, or no
    such process)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return f"{boot}:{fields[19]}"  # field 22 of stat: starttime


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


@dataclass
class Holder:
    pid: int
    host: str
    command: str
    started: float
    heartbeat: float
    interval: float
    token: str  # tells our own lock from a successor's after a takeover
    process: str = ""  # process_identity(pid) when the lock was taken ("" before 2026-12)

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat

    def gone(self) -> bool:
        """The holder ran on this host and its process no longer exists (or the pid names a
        younger process): known at once, without waiting for heartbeats."""
        if self.host != socket.gethostname():
            return False
        if not _alive(self.pid):
            return True
        now = process_identity(self.pid)
        return bool(self.process and now and now != self.process)

    def stale(self, now: float | None = None) -> bool:
        return self.gone() or self.age(now) > MISSED * self.interval

    def stale_in(self, now: float | None = None) -> float:
        """Seconds until the heartbeat rule counts this lock as a dead driver's."""
        return max(0.0, MISSED * self.interval - self.age(now))

    def describe(self, now: float | None = None) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return (
            f"pid {self.pid} on {self.host} ({self.command}, started {started}, "
            f"last heartbeat {self.age(now):.0f} s ago)"
        )


class LockHeld(SweepError):
    """Another driver holds the sweep (exit 2 like every SweepError)."""


class _Store:
    """The lock file on a local path or behind a URI (pyarrow's filesystems)."""

    def __init__(self, experiment_path: str) -> None:
        self.uri = "://" in experiment_path and not experiment_path.startswith("file://")
        base = experiment_path.removeprefix("file://").rstrip("/")
        if self.uri:
            from pyarrow import fs  # only for object stores

            self.fs, base = fs.FileSystem.from_uri(base)
        self.dir = base
        self.path = f"{base}/{LOCK_FILE}"

    def read(self) -> str | None:
        try:
            if self.uri:
                with self.fs.open_input_stream(self.path) as f:
                    return bytes(f.read()).decode()
            return Path(self.path).read_text()
        except (FileNotFoundError, OSError):
            return None

    def create(self, text: str) -> bool:
        """Write the lock if none exists; False if one does. OSError if the place is unwritable."""
        if self.uri:
            if self.read() is not None:
                return False
            self.write(text)
            return True
        Path(self.dir).mkdir(parents=True, exist_ok=True)
        # Written whole under a private name, then hard-linked into place: link() fails if the
        # lock exists (atomic like O_EXCL, also on NFS), and no reader ever sees half a lock.
        tmp = f"{self.path}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
        except OSError:
            os.unlink(tmp)
            raise
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def write(self, text: str) -> None:
        if self.uri:
            with self.fs.open_output_stream(self.path) as f:
                f.write(text.encode())
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            Path(tmp).write_text(text)
            os.replace(tmp, self.path)  # readers never see half a heartbeat
        finally:  # a full disk: no half-written temp file stays behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def discard(self, token: str) -> bool:
        """Move a (stale) lock out of the way; only one of several racing takers succeeds."""
        if self.uri:
            self.fs.delete_file(self.path)
            return True
        try:
            os.rename(self.path, f"{self.path}.stale-{token}")
        except FileNotFoundError:
            return False  # another driver took it over first
        os.unlink(f"{self.path}.stale-{token}")
        return True

    def remove(self) -> None:
        try:
            if self.uri:
                self.fs.delete_file(self.path)
            else:
                os.unlink(self.path)
                # a sweep refused before Tune wrote anything leaves no empty directory behind
                if not any(Path(self.dir).iterdir()):
                    Path(self.dir).rmdir()
        except OSError:
            pass


def parse_holder(text: str | None) -> Holder | None:
    if not text:
        return None
    try:
        data = json.loads(text)
        optional = {"process"}  # absent from locks written before it existed
        fields = [k for k in Holder.__dataclass_fields__ if k not in optional or k in data]
        return Holder(**{k: data[k] for k in fields})
    except (ValueError, KeyError, TypeError):
        return None


def read_holder(experiment_path: str) -> Holder | None:
    """Who holds the sweep's lock (None when no driver does, or the file is unreadable)."""
    return parse_holder(_Store(experiment_path).read())


def _driven_by(name: str, holder: Holder) -> LockHeld:
    here = holder.host == socket.gethostname()
    then = (
        "stop it first, or wait for it"
        if here
        else f"if it died, the lock counts as stale in {holder.stale_in():.0f} s (then "
        f"`headsweep resume {name}`)"
    )
    return LockHeld(f"sweep {name!r} is being run by another driver: {holder.describe()}; {then}")


def _why(holder: Holder | None) -> str:
    if holder is None:
        return "an unreadable lock"
    return f"{'its process is gone' if holder.gone() else 'no heartbeat'}: {holder.describe()}"


def refuse_if_driven(experiment_path: str, name: str) -> None:
    """LockHeld, naming the holder, when a live driver holds the sweep: a first look for a
    command to fail in a second rather than after loading Ray and Tune. Not the decision: a
    driver may start or die before `SweepLock.acquire`, which decides."""
    holder = read_holder(experiment_path)
    if holder is not None and not holder.stale():
        raise _driven_by(name, holder)


class SweepLock:
    """The driver's hold on a sweep. `acquire()` then `release()` (or a `with` block); a
    background thread rewrites the heartbeat and calls `on_beat` (the driver mirrors it into
    the parent run) every `interval` seconds."""

    def __init__(
        self, experiment_path: str, name: str, command: str, interval: float | None = None
    ) -> None:
        self.path, self.name, self.command = experiment_path, name, command
        self.interval = interval or heartbeat_interval()
        self.store = _Store(experiment_path)
        self.token = secrets.token_hex(8)
        self.on_beat: Callable[[float], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False
        self.lost = False  # set when a successor took the lock over (we were presumed dead)

    def _holder(self, started: float) -> Holder:
        return Holder(
            pid=os.getpid(),
            host=socket.gethostname(),
            process=process_identity(os.getpid()),
            command=self.command,
            started=started,
            heartbeat=time.time(),
            interval=self.interval,
            token=self.token,
        )

    def acquire(self, takeover: bool) -> SweepLock:
        """Take the lock; refuse (LockHeld, naming the holder) a live driver's, and a dead
        driver's unless `takeover` (resume)."""
        self._started = time.time()
        text = json.dumps(asdict(self._holder(self._started)))
        for _ in range(3):
            try:
                created = self.store.create(text)
            except OSError as exc:
                raise SweepError(
                    f"cannot write the sweep's lock at {self.store.path} "
                    f"({exc.strerror or exc}); is --storage writable?"
                ) from None
            if created:
                break
            raw = self.store.read()
            holder = parse_holder(raw)
            if holder is None and raw is None:
                continue  # released between our create and read: try again
            if holder is not None and not holder.stale():
                raise _driven_by(self.name, holder)
            if not takeover:
                who = holder.describe() if holder else "an unreadable lock"
                raise LockHeld(
                    f"sweep {self.name!r} was left by a driver that died ({who}); continue it "
                    f"with `headsweep resume {self.name}`"
                )
            print(f"taking over sweep {self.name!r} from a dead driver ({_why(holder)})",
                  file=sys.stderr)  # fmt: skip
            self.store.discard(self.token)
        else:
            raise LockHeld(f"sweep {self.name!r}: another driver keeps taking its lock")
        # no O_EXCL in object stores: the last writer wins, so check we are it
        winner = parse_holder(self.store.read()) if self.store.uri else None
        if winner is not None and winner.token != self.token:
            raise LockHeld(f"sweep {self.name!r}: another driver took the lock at once")
        self._held = True
        self._thread = threading.Thread(target=self._beat, name="headsweep-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        holder = parse_holder(self.store.read())
        if holder is not None and holder.token != self.token:
            if not self.lost:
                log.error("sweep %s: another driver took the lock over: %s", self.name, holder)
            self.lost = True
            return
        now = time.time()
        try:
            self.store.write(json.dumps(asdict(self._holder(self._started))))
        except OSError as exc:  # storage hiccup: the next beat tries again
            log.warning("heartbeat of sweep %s not written: %s", self.name, exc)
        if self.on_beat is not None:
            try:
                self.on_beat(now)
            except Exception as exc:  # a tracking hiccup must not end the sweep
                log.warning("heartbeat of sweep %s not recorded in MLflow: %s", self.name, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._held and not self.lost:
            holder = parse_holder(self.store.read())
            if holder is None or holder.token == self.token:
                self.store.remove()
        self._held = False

    def __enter__(self) -> SweepLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def driver_state(
    status: str,
    tags: Mapping[str, str],
    experiment_path: str | None = None,
    now: float | None = None,
) -> str:
    """Is a sweep's driver alive? For `headsweep status` and `list` (no Ray, no torch).

    `status` and `tags` are the parent run's (`run.info.status`, `run.data.tags`);
    `experiment_path` is the sweep's Tune directory (`tags["headsweep.storage"] + "/" + name`;
    pass None when this machine cannot see the storage). Returns:

    - "finished": the parent run has ended (FINISHED, FAILED or KILLED; its
      `headsweep.state` tag says how);
    - "running": the parent run is RUNNING and a heartbeat (the lock file's, else the parent
      run's `headsweep.heartbeat` tag) is younger than `MISSED` heartbeat intervals, or the
      sweep predates heartbeats (nothing to judge by);
    - "crashed": the parent run is RUNNING but no heartbeat came for `MISSED` intervals: the
      driver died (kill -9, lost node). `headsweep resume NAME` continues it.
    """
    if status != "RUNNING":
        return "finished"
    now = time.time() if now is None else now
    beats: list[tuple[float, float]] = []  # (last beat, interval)
    if experiment_path:
        holder = read_holder(experiment_path)
        if holder is not None and holder.gone():
            return "crashed"  # its process is gone from this host: no need to wait for beats
        if holder is not None:
            beats.append((holder.heartbeat, holder.interval))
    with contextlib.suppress(KeyError, ValueError):
        beats.append((float(tags[HEARTBEAT_TAG]), float(tags.get(INTERVAL_TAG, "30"))))
    if not beats:
        return "running"
    last, interval = max(beats)
    return "crashed" if now - last > MISSED * interval else "running"


def command_line() -> str:
    """What the lock says the holder is running (e.g. `headsweep resume qs`)."""
    args = [os.path.basename(sys.argv[0]) if sys.argv else "python", *sys.argv[1:]]
    return " ".join(args)[:200]
