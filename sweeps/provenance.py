"""Which code and environment made a result: the git revision, and the locked environment
(`requirements.lock`, written by `make lock`, installed by `make demo`, `make test` and CI): its
hash, and where the running interpreter's packages differ from it. The parent run of every sweep
records them (`sweeps.tracking.versions`), `headsweep reproduce`'s report names each sweep's
lock, `headsweep --version` prints them. The standard library only."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
REVISION_ENV = "HEADSWEEP_GIT_REVISION"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def locked(path: Path = LOCK) -> dict[str, str]:
    """{normalised package name: pinned version}; {} when there is no lock (an install of
    headsweep as a library, from its ranges)."""
    if not path.is_file():
        return {}
    pins = (_PIN.match(line) for line in path.read_text().splitlines())
    return {_normal(m.group(1)): m.group(2) for m in pins if m}


def lock_hash(path: Path = LOCK) -> str:
    """The first 12 hex digits of the lock's sha256, "none" without a lock."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "none"


def drift(path: Path = LOCK) -> list[str]:
    """One entry per locked package whose installed version differs ("mlflow 3.19.0 (locked
    3.18.0)") or that is missing; [] when the interpreter runs exactly the lock."""
    installed = {_normal(d.metadata["Name"]): d.version for d in metadata.distributions()}
    return [
        f"{name} {installed.get(name, 'missing')} (locked {version})"
        for name, version in sorted(locked(path).items())
        if installed.get(name) != version
    ]


def _git(cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def git_revision() -> str:
    """The code's git revision, best effort. A sweep submitted with `ray job submit` runs from
    a copy of the working dir without `.git`: there the revision comes from
    $HEADSWEEP_GIT_REVISION, passed with `--runtime-env-json` (README, "Run on a cluster")."""
    return _git(LOCK.parent) or os.environ.get(REVISION_ENV, "").strip() or "unknown"


def version_line() -> str:
    """`headsweep --version`: the package's version and the code's revision."""
    try:
        version = metadata.version("headsweep")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    return f"headsweep {version} (git {git_revision()}, lock {lock_hash()})"
