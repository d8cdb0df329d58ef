"""Screenshots of a sweep's parent run in the MLflow UI, taken with headless Chromium, for the
docs (README, "Results in MLflow"). Not a test: CI has no browser.

    python docs/tools/ui_screenshot.py --root runs --sweep quickstart-... --out docs/figures

Starts `headsweep ui` on a free port (its own process group, stopped afterwards), waits for
/health, and saves two pages of the sweep's parent run: the run's overview and its
`analysis/report.html` artifact in MLflow's artifact viewer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = {  # file name -> the part of the UI's URL after the run
    "mlflow_ui_parent_run.png": "",
    "mlflow_ui_report.png": "/artifactPath/analysis/report.html",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {seconds:g} s")


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--root", required=True)
    args.add_argument("--sweep", required=True)
    args.add_argument("--out", default=str(REPO / "docs" / "figures"))
    args.add_argument("--size", default="1500,1500", help="window WIDTH,HEIGHT in px")
    opts = args.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("no chromium on PATH (Debian: apt-get install chromium)")
    sys.path.insert(0, str(REPO))
    from sweeps.locations import Locations

    parent = Locations.make(opts.root).tracker().find_sweep(opts.sweep)
    if parent is None:
        raise SystemExit(f"no sweep {opts.sweep!r} under {opts.root}")
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "sweeps.cli", "ui", "--root", opts.root, "--port", str(port)],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", 90)
        run = f"{base}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
        Path(opts.out).mkdir(parents=True, exist_ok=True)
        for name, tail in PAGES.items():
            target = Path(opts.out) / name
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",  # root in a container
                    "--disable-gpu",
                    "--hide-scrollbars",
                    f"--window-size={opts.size}",
                    "--virtual-time-budget=60000",  # the single-page app loads its data first
                    f"--screenshot={target}",
                    run + tail,
                ],
                check=True,
                capture_output=True,
                timeout=300,
            )
            print(f"{target}: {run + tail}")
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
