"""`from sweeps import load_sweep` on one real quickstart-like sweep (Ray Tune, tracked by a real
`mlflow server` on loopback with proxied artifacts): a fresh Python process gets the tables
from the root's table directory, from the parent run's artifacts through the server alone, or
rebuilt by the analysis, each time without starting Ray; and the parent run's report.html holds
the gap table, the verdict lines and the figures inline."""

import base64
import html
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from test_orchestration import REPO, free_port

from sweeps import cli
from sweeps.tracking import Tracker

pytestmark = pytest.mark.ray
NAME = "qs"
CORE = ("trials", "probes", "gaps", "history", "bounds")
ENV = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
ENV["RAY_AUTH_MODE"] = "disabled"
# Runs in a fresh interpreter: loads the sweep, then reports what it got and whether Ray was
# imported or started, and the processes it left running as its children.
LOAD = """
import json, os, sys
from pathlib import Path
import pandas as pd
from sweeps import load_sweep

name, root, uri, rebuild = sys.argv[1:5]
sweep = load_sweep(name, root=root, tracking_uri=uri or None, rebuild=rebuild == "1")
def parent_of(stat):
    return int(stat.read_text().rsplit(")", 1)[1].split()[1])
children = [
    p.name for p in Path("/proc").iterdir()
    if p.name.isdigit() and p.name != str(os.getpid()) and (p / "stat").exists()
    and parent_of(p / "stat") == os.getpid()
]
ray = sys.modules.get("ray")
print(json.dumps({
    "source": sweep.source,
    "names": sweep.names,
    "settings": sweep.settings,
    "rows": {n: len(getattr(sweep, n)) for n in sweep.names},
    "hash": {n: str(pd.util.hash_pandas_object(getattr(sweep, n), index=False).sum())
             for n in sweep.names},
    "ray_imported": ray is not None,
    "ray_initialized": bool(ray is not None and ray.is_initialized()),
    "children": children,
}))
"""


def load_in_fresh_python(root: Path, uri: str = "", rebuild: bool = False) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", LOAD, NAME, str(root), uri, "1" if rebuild else "0"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def local_hashes(root: Path) -> dict[str, str]:
    directory = root / "tables" / NAME
    return {
        path.stem: str(pd.util.hash_pandas_object(pd.read_parquet(path), index=False).sum())
        for path in directory.glob("*.parquet")
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on a free loopback port, artifacts proxied to a directory of its own."""
    base = tmp_path_factory.mktemp("server")
    port = free_port()
    log = (base / "mlflow.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}"),
            *("--artifacts-destination", str(base / "artifacts")),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ],
        env={**ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: stopped whole, workers included
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((base / "mlflow.log").read_text()[-3000:])
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def sweep(ray_session, server, tmp_path_factory):
    """The quickstart at --smoke size with three epochs (so each trial's bounds have a rank
    correlation), tracked by the server; Tune's files and the tables under the root."""
    root = tmp_path_factory.mktemp("load") / "runs"
    spec = str(REPO / "sweeps/quickstart.yaml")
    args = ["run", spec, "--smoke", "--set", "train.epochs=3", "--name", NAME]
    assert cli.main([*args, "--root", str(root), "--tracking-uri", server]) == 0
    return root, server


def test_a_fresh_python_reads_the_root_tables_without_ray(sweep):
    root, _ = sweep
    got = load_in_fresh_python(root)
    assert got["source"] == str(root / "tables" / NAME)
    assert set(CORE) <= set(got["names"])
    assert got["rows"]["trials"] == 4 and got["rows"]["history"] == 4 * 3
    assert got["settings"] == ["model.head.name", "aug.p_drop"]
    assert got["hash"] == local_hashes(root)
    assert not got["ray_imported"] and not got["children"]


def test_through_the_server_alone_the_tables_come_from_the_parent_run(sweep, tmp_path):
    root, uri = sweep
    got = load_in_fresh_python(tmp_path / "laptop", uri)  # no table directory here
    assert got["source"].startswith(uri) and set(CORE) <= set(got["names"])
    assert got["hash"] == local_hashes(root)
    assert not got["ray_imported"] and not got["children"]
    assert not (tmp_path / "laptop").exists()  # reading wrote nothing


def test_rebuilding_runs_the_analysis_without_starting_ray(sweep):
    root, uri = sweep
    before = local_hashes(root)
    got = load_in_fresh_python(root, uri, rebuild=True)
    assert not got["ray_initialized"] and not got["children"]
    assert got["hash"] == before  # the same tables: the analysis is idempotent


def test_the_bounds_table_correlates_each_trial_over_its_epochs(sweep):
    root, _ = sweep
    bounds = pd.read_parquet(root / "tables" / NAME / "bounds.parquet")
    per_trial = bounds[bounds["scope"] == "trial"]
    assert set(per_trial["bound"]) == {"mi_lower", "mi_upper"}
    targets = set(per_trial["target"])
    assert {"digit", "object"} <= targets and set(per_trial["n"]) == {3}
    assert per_trial["rho"].between(-1, 1).any()  # three epochs: defined unless constant
    across = bounds[bounds["scope"] == "sweep"]
    # targets probed online only (textures_v2's coarse label) have no final probe to rank
    assert set(across["target"]) == {"digit", "object"}
    assert len(across) == 2 * 2 * 2 and set(across["n"]) == {4}
    assert (root / "tables" / NAME / "figures" / "bounds_digit.png").stat().st_size > 10_000


def test_the_parent_run_shows_the_answer_in_report_html(sweep, tmp_path):
    root, uri = sweep
    tracker = Tracker(uri)
    client, parent = tracker.client, tracker.find_sweep(NAME)
    listed = {a.path for a in client.list_artifacts(parent.info.run_id, "analysis")}
    assert "analysis/report.html" in listed
    page = Path(client.download_artifacts(parent.info.run_id, "analysis/report.html", tmp_path))
    text = page.read_text()
    summary = (root / "tables" / NAME / "summary.md").read_text()
    verdicts = [line[2:] for line in summary.splitlines() if line.startswith("- ")]
    assert any(line.startswith("T6:") for line in verdicts)
    for line in verdicts:
        assert f"<li>{html.escape(line)}</li>" in text
    gaps = pd.read_parquet(root / "tables" / NAME / "gaps.parquet")
    rows = re.findall(r"<tr>(<td.*?)</tr>", text)
    assert len(rows) >= len(gaps)
    for _, row in gaps.iterrows():
        assert any(f">{row['gap_mean']:+.3f}" in r and row["target"] in r for r in rows)
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert images and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
