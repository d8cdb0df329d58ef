"""`headsweep ui`: MLflow's server on a root's tracking store, announced only once it answers.

The port is checked before the server starts (MLflow's server exits with a log line, which a
user reads as success, when the port is taken); the URL is printed once /health answers (the
server needs ~20 s to import); SIGTERM and Ctrl-C stop the server with the command, so no
server is left serving a store nobody is looking at. Imports neither MLflow nor torch.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import FrameType

from sweeps.locations import Locations, SweepError

START_TIMEOUT_S = 180.0  # MLflow's server imports for ~20 s on a busy 2-core machine


def check_port_free(host: str, port: int) -> None:
    """A SweepError naming the address when something already listens there."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SweepError(
                f"{host}:{port} is not available ({exc.strerror or exc}); pick another with --port"
            ) from None


def _answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"{address}/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group: MLflow's server starts job consumers (huey) that
    outlive it when only the server itself is signalled."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return  # the group is gone
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)  # the consumers get the same signal; give them a moment


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(loc: Locations, host: str, port: int) -> int:
    """Run the server until Ctrl-C or SIGTERM (exit 0); a server that stops by itself is an
    error (exit 1), one that never answers a SweepError (exit 2)."""
    check_port_free(host, port)
    loc.root.mkdir(parents=True, exist_ok=True)
    address = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        loc.tracking_uri,
        "--default-artifact-root",
        (loc.root / "mlartifacts").as_uri(),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    print(f"starting the MLflow UI for {loc.root} ...", flush=True)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    process = subprocess.Popen(command, start_new_session=True)  # a group _stop can end whole
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(address):
            if process.poll() is not None:
                raise SweepError(
                    f"the MLflow server exited with code {process.returncode} before it "
                    f"answered on {address} (its log is above)"
                )
            if time.monotonic() > deadline:
                raise SweepError(f"the MLflow server did not answer on {address} in time")
            time.sleep(0.5)
        if process.poll() is not None:  # another server answered on the port it lost
            raise SweepError(f"the MLflow server exited with code {process.returncode}")
        print(f"MLflow UI for {loc.root} at {address} (Ctrl-C stops it)", flush=True)
        code = process.wait()
        print(
            f"headsweep: the MLflow server stopped on its own (exit code {code})", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(process)
        signal.signal(signal.SIGTERM, previous)
