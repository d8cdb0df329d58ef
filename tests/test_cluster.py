"""Clusters: the launcher configs check offline with Ray's own schema, naming broken keys; a real
two-node Ray cluster on this machine (`ray start --head` + `ray start --address`, one CPU each,
the head advertising a `gpu_standin` resource) with a real `mlflow server` on loopback runs a
sweep submitted with `ray job submit` on both nodes, packs fractional-GPU trials onto the one
node that has the stand-in, and refuses a storage path the other node cannot see (the worker
node runs in a private mount namespace where that directory is its own tmpfs). An unreachable
tracking server fails fast and creates nothing.

Every process the cluster tests start runs in a session of its own, killed at the end; `ray stop`
is never used (it would stop every Ray on the machine, other test sessions' included)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_BASE, write_spec

from sweeps import cli
from sweeps.cluster import launchable_node_types, validate_cluster
from sweeps.driver import SweepError, check_fits, check_storage, nodes_for
from sweeps.spec import SpecError, load_spec
from sweeps.tracking import PARENT, Tracker

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def headsweep() -> list[str]:
    script = BIN / "headsweep"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sweeps.cli"]


# --------------------------------------------------------------------------- validate


def cluster_configs() -> list[Path]:
    return [REPO / "cluster.yaml", *sorted((REPO / "clusters").glob("*.yaml"))]


@pytest.mark.parametrize("path", cluster_configs(), ids=lambda p: p.name)
def test_shipped_cluster_configs_pass_rays_own_checks(path):
    assert validate_cluster(path) == []


@pytest.mark.parametrize("path", cluster_configs(), ids=lambda p: p.name)
def test_shipped_cluster_configs_keep_mlflow_local_and_telemetry_off(path):
    """MLflow's server has no authentication: bound to the head's loopback, reached by SSH.
    Ray starts with usage stats off; the environment is one file that ~/.bashrc sources."""
    config = yaml.safe_load(path.read_text())
    head = " ".join(config["head_start_ray_commands"])
    assert "--host 127.0.0.1" in head and "0.0.0.0 --port 5000" not in head
    starts = [
        c
        for key in ("head_start_ray_commands", "worker_start_ray_commands")
        for c in config[key]
        if "ray start" in c
    ]
    assert starts and all("--disable-usage-stats" in c for c in starts)
    setup = " ".join(config["setup_commands"])
    for setting in ("RAY_USAGE_STATS_ENABLED=0", "MLFLOW_DISABLE_TELEMETRY=true"):
        assert setting in setup
    appended = [
        c for c in config["setup_commands"] + config["head_setup_commands"] if "bashrc" in c
    ]
    assert len(appended) == 1 and ">> ~/.bashrc" in appended[0] and "headsweep_env" in appended[0]


@pytest.mark.parametrize("path", cluster_configs(), ids=lambda p: p.name)
def test_the_environment_file_commands_are_idempotent(path, tmp_path):
    """The setup lines that write ~/.headsweep_env and hook it into ~/.bashrc, run twice in a
    scratch HOME with bash (what `ray up` does on every call): the file holds the settings once,
    ~/.bashrc gains one line, and sourcing it exports the auth mode and telemetry opt-outs."""
    config = yaml.safe_load(path.read_text())
    lines = [c for c in config["setup_commands"] + config["head_setup_commands"] if "env" in c]
    lines = [c for c in lines if "headsweep_env" in c]
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    (tmp_path / ".bashrc").write_text("# the user's own\n")
    for _ in range(2):
        for line in lines:
            subprocess.run(["bash", "-c", line], env=env, check=True)
    hooked = (tmp_path / ".bashrc").read_text().splitlines()
    assert hooked[0] == "# the user's own" and len(hooked) == 2 and "headsweep_env" in hooked[1]
    written = (tmp_path / ".headsweep_env").read_text()
    assert written.count("RAY_AUTH_MODE=token") == 1
    (tmp_path / "venv/bin").mkdir(parents=True)
    (tmp_path / "venv/bin/activate").write_text("")
    shown = subprocess.run(
        [
            "bash",
            "-c",
            ". ~/.bashrc; echo $RAY_AUTH_MODE $RAY_USAGE_STATS_ENABLED $MLFLOW_DISABLE_TELEMETRY",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shown == ["token", "0", "true"]


def test_headsweep_validate_cluster_yaml_passes():
    done = subprocess.run(
        [*headsweep(), "validate", "cluster.yaml"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "cluster.yaml: valid Ray cluster config" in done.stdout


def _set(path: str, value: object) -> Callable[[dict], None]:
    def mutate(config: dict) -> None:
        *parents, leaf = path.split("/")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value

    return mutate


BROKEN = [
    # (what to change in cluster.yaml, the key the problem must name, words it must say)
    pytest.param(_set("max_worker", 4), "max_worker:", "unknown key", id="unknown-key"),
    pytest.param(
        _set("available_node_types/gpu/min_worker", 0),
        "available_node_types.gpu.min_worker:",
        "unknown key",
        id="unknown-nested-key",
    ),
    pytest.param(_set("max_workers", "four"), "max_workers:", "expected integer", id="wrong-type"),
    pytest.param(
        _set("available_node_types/gpu/resources", {"GPU": 0.5}),
        "available_node_types.gpu.resources.GPU:",
        "expected integer",
        id="wrong-nested-type",
    ),
    pytest.param(
        _set("head_node_type", "cpu_head"),
        "head_node_type:",
        "not one of available_node_types (gpu, head)",
        id="unknown-head-node-type",
    ),
    pytest.param(
        _set("provider/type", "awz"), "provider.type:", "unknown provider", id="unknown-provider"
    ),
    pytest.param(
        _set("worker_start_ray_commands", ["RAY_AUTH_MODE=disabled ray start --address=h:6379"]),
        "RAY_AUTH_MODE:",
        "same mode",
        id="auth-mode-differs",
    ),
]


@pytest.mark.parametrize("mutate, key, words", BROKEN)
def test_a_broken_cluster_yaml_fails_naming_the_key(tmp_path, capsys, mutate, key, words):
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    mutate(config)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert key in err and words in err, err


def test_the_onprem_variant_needs_its_host_list(tmp_path):
    config = yaml.safe_load((REPO / "clusters" / "onprem.yaml").read_text())
    del config["provider"]["worker_ips"]
    path = tmp_path / "onprem.yaml"
    path.write_text(yaml.safe_dump(config))
    assert validate_cluster(path) == ["provider.worker_ips: required for the local provider"]
    path.write_text("provider: [aws\n")
    assert validate_cluster(path)[0].startswith("not valid YAML")
    assert validate_cluster(tmp_path / "missing.yaml")[0].startswith("cannot read the file")


def test_gpu_nodes_the_autoscaler_can_add_count_as_places_for_trials(tmp_path):
    """On the head of a `ray up` cluster scaled to zero GPU workers, a GPU spec must fit."""
    from ray.autoscaler._private.util import prepare_config

    bootstrap = prepare_config(yaml.safe_load((REPO / "cluster.yaml").read_text()))
    # `ray up` fills each type's resources from its instance type before uploading the config.
    bootstrap["available_node_types"]["gpu"]["resources"] = {"CPU": 4, "GPU": 1}
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(json.dumps(bootstrap))
    [gpu] = launchable_node_types(str(path))
    assert (gpu.name, gpu.max_workers, gpu.resources) == ("gpu", 4, {"CPU": 4.0, "GPU": 1.0})
    spec = load_spec(write_spec(tmp_path / "gpu.yaml", resources={"cpu": 2, "gpu": 0.5}))
    head = {"CPU": 4.0, "GPU": 0.0}
    check_fits(spec, [head, gpu.resources])
    with pytest.raises(SpecError, match=r"resources\.gpu"):
        check_fits(spec, [head])
    assert launchable_node_types(str(tmp_path / "nowhere.yaml")) == []


@pytest.mark.ray
def test_nodes_the_autoscaler_may_add_fit_gpu_trials_but_not_a_local_path(
    ray_session, tmp_path, monkeypatch
):
    """On the head of a cluster scaled down to it: a GPU sweep fits, and a path on this disk is
    refused although every live node sees it, as GPU nodes added later would not."""
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    node = {"node_config": {}, "min_workers": 0}
    bootstrap.write_text(
        json.dumps(
            {
                "head_node_type": "head",
                "available_node_types": {
                    "head": {**node, "resources": {"CPU": 4}, "max_workers": 0},
                    "gpu": {**node, "resources": {"CPU": 4, "GPU": 1}, "max_workers": 4},
                },
            }
        )
    )
    gpu_spec = load_spec(write_spec(tmp_path / "gpu.yaml", resources={"cpu": 1, "gpu": 0.5}))
    monkeypatch.setenv("HEADSWEEP_AUTOSCALING_CONFIG", str(bootstrap))
    check_fits(gpu_spec, nodes_for(None))  # no GPU here yet, but the autoscaler can add one
    check_storage("s3://bucket/ray", None)  # object storage is the same from every node
    storage = tmp_path / "ray"
    with pytest.raises(SweepError, match=r"autoscaler may add nodes \(gpu x4\).*s3://"):
        check_storage(str(storage), None)
    assert not storage.exists()  # the check leaves nothing behind
    monkeypatch.delenv("HEADSWEEP_AUTOSCALING_CONFIG")
    check_storage(str(storage), None)  # one node and nothing to add: a local path is fine
    with pytest.raises(SpecError, match=r"resources\.gpu"):
        check_fits(gpu_spec, nodes_for(None))


# --------------------------------------------------------------------------- tracking server


def test_an_unreachable_tracking_server_fails_fast_and_creates_nothing(tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml")
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    done = subprocess.run(
        [*headsweep(), "run", spec, "--name", "nowhere", "--tracking-uri", address],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("headsweep: error:")]
    assert len(errors) == 1 and address in errors[0] and "not reachable" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # no runs/, no Tune dir
    assert time.monotonic() - started < 60


# --------------------------------------------------------------------------- a real cluster


@dataclass
class TwoNodes:
    base: Path
    gcs: str  # the head's GCS address, for --address
    dashboard: str  # the job API, for ray job submit --address
    tracking: str  # the MLflow server
    head_id: str
    worker_id: str
    shared: Path  # seen by both nodes
    private: Path  # the worker node sees its own empty tmpfs here
    sessions: list[int] = field(default_factory=list)


def _start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A process in a new session of its own: everything it starts can be found and killed."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            env=env or ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _session_members(sessions: list[int]) -> list[int]:
    """Live processes of these sessions. Ray's workers move to process groups of their own, but
    they stay in the session of the `ray start` that launched their node."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) in sessions:
            found.append(int(stat.parent.name))
    return found


def _stop_sessions(sessions: list[int]) -> None:
    """SIGTERM, a short grace, then SIGKILL, to every process of the sessions we started."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pid in _session_members(sessions):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _session_members(sessions):
            time.sleep(0.2)


def _ray_start(args: list[str], log: Path, private_tmpfs: Path | None = None) -> int:
    """`ray start` in a new session; it returns once its node is up, and its daemons stay in
    that session, whose id is returned. With `private_tmpfs`, the node runs in a mount
    namespace of its own where that directory is an empty tmpfs: it cannot see the files the
    driver writes there."""
    command = [str(BIN / "ray"), "start", *args]
    if private_tmpfs is not None:
        script = (
            f"mount -t tmpfs tmpfs {shlex.quote(str(private_tmpfs))} && exec {shlex.join(command)}"
        )
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    proc = _start(command, log)
    if proc.wait(timeout=120) != 0:
        raise RuntimeError(f"ray start failed:\n{log.read_text()[-3000:]}")
    return proc.pid


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[TwoNodes]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1): the worker node gets a private mount namespace")
    # Short: Ray's socket paths under the temp dir must stay below 108 characters.
    base = Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp"))
    shared, private = base / "shared", base / "private"
    shared.mkdir()
    private.mkdir()
    sessions: list[int] = []
    mlflow = None
    try:
        mlflow_port = free_port()
        mlflow = _start(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{base / 'mlflow.db'}",
                "--artifacts-destination",
                str(base / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
            base / "mlflow.log",
            # MLflow's background job runner (GenAI features) is not needed: fewer processes.
            env={**ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        sessions.append(mlflow.pid)
        gcs_port, dash_port = free_port(), free_port()

        def common() -> list[str]:  # two nodes on one machine: no fixed port may be shared
            return [
                "--num-cpus=1",
                "--disable-usage-stats",
                "--object-store-memory=100000000",
                "--min-worker-port=0",
                "--max-worker-port=0",
                f"--dashboard-agent-listen-port={free_port()}",
            ]

        sessions.append(
            _ray_start(
                [
                    "--head",
                    f"--port={gcs_port}",
                    "--resources",
                    json.dumps({"gpu_standin": 1}),
                    f"--temp-dir={base / 'h'}",
                    "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dash_port}",
                    f"--ray-client-server-port={free_port()}",
                    *common(),
                ],
                base / "head.log",
            )
        )
        nodes_url = f"http://127.0.0.1:{dash_port}/nodes?view=summary"

        def alive() -> list[dict]:
            nodes = [n["raylet"] for n in _get_json(nodes_url)["data"]["summary"]]
            return [n for n in nodes if n["state"] == "ALIVE"]

        [head] = _wait(alive, 60, "the head node")
        sessions.append(
            _ray_start(
                [
                    f"--address={head['nodeManagerAddress']}:{gcs_port}",
                    f"--temp-dir={base / 'w'}",
                    *common(),
                ],
                base / "worker.log",
                private_tmpfs=private,
            )
        )
        nodes = _wait(lambda: len(alive()) == 2 and alive(), 60, "the worker node")
        worker_id = next(n["nodeId"] for n in nodes if not n["isHeadNode"])
        tracking = f"http://127.0.0.1:{mlflow_port}"
        _wait(
            lambda: urllib.request.urlopen(f"{tracking}/health", timeout=2).status == 200,
            90,
            "MLflow",
        )
        yield TwoNodes(
            base,
            f"{head['nodeManagerAddress']}:{gcs_port}",
            f"http://127.0.0.1:{dash_port}",
            tracking,
            head["nodeId"],
            worker_id,
            shared,
            private,
            sessions,
        )
    finally:
        _stop_sessions(sessions)
        if mlflow is not None:
            mlflow.wait(timeout=10)  # our child: reap it
        shutil.rmtree(base, ignore_errors=True)


def few_seconds_base() -> dict:
    """Trials of several seconds. Tune reuses actors: a trial whose actor is still starting is
    handed to an actor that has just finished, so trials must outlast an actor's start (a
    process importing torch, slower on a busy machine) for the other actors to get any."""
    base = copy.deepcopy(TINY_BASE)
    base["data"]["n_train"] = 4096
    base["train"]["epochs"] = 5
    return base


def _run_sweep(spec: str, name: str, storage: Path, root: Path, c: TwoNodes) -> list[str]:
    """`headsweep run` against the test cluster's MLflow server (no --address: add it)."""
    where = ["--storage", str(storage), "--tracking-uri", c.tracking, "--root", str(root)]
    return [*headsweep(), "run", spec, "--name", name, *where]


def _cli(args: list[str], cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def _tables(root: Path, sweep: str) -> dict[str, pd.DataFrame]:
    names = ("trials", "probes", "gaps", "history")
    return {n: pd.read_parquet(root / "tables" / sweep / f"{n}.parquet") for n in names}


@pytest.mark.ray
def test_a_node_local_storage_path_is_refused_before_any_trial(two_nodes, tmp_path):
    c = two_nodes
    spec = write_spec(tmp_path / "local.yaml", name="local")
    storage = c.private / "ray"  # the worker node sees its own empty tmpfs here
    command = _run_sweep(spec, "local", storage, tmp_path / "r", c)
    done = _cli([*command, "--address", c.gcs], tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("headsweep: error:")]
    assert str(storage) in error and "1 of 2 nodes" in error
    assert c.worker_id in error and c.head_id not in error  # names the node that cannot see it
    assert "s3://" in error and "gs://" in error and "mounted" in error  # and what to use instead
    assert list(c.private.iterdir()) == []  # the marker and the directories made for it are gone
    assert not (tmp_path / "r").exists()
    assert Tracker(c.tracking).find_sweep("local") is None  # no parent run: nothing started


@pytest.mark.ray
def test_a_sweep_submitted_as_a_ray_job_runs_on_both_nodes(two_nodes, tmp_path):
    c = two_nodes
    base = few_seconds_base()
    spec = write_spec(
        tmp_path / "multi.yaml",
        name="multinode",
        base=base,
        space={"aug.p_drop": {"grid": [0.0, 1.0]}},  # one trial per node, at the same time
        max_concurrent=2,
    )
    head_root = c.base / "head-runs"
    # No --address: the job's driver joins the cluster through the RAY_ADDRESS Ray gives it.
    entrypoint = _run_sweep(spec, "multinode", c.shared / "ray", head_root, c)
    done = _cli(
        [str(BIN / "ray"), "job", "submit", "--address", c.dashboard, "--", *entrypoint], tmp_path
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]

    tables = _tables(head_root, "multinode")
    trials = tables["trials"]
    assert len(trials) == 2 and set(trials["status"]) == {"finished"}
    ran_on = trials[["trial_id", "node_id", "wall_time_s"]].to_string()
    assert set(trials["node_id"]) == {c.head_id, c.worker_id}, ran_on  # both nodes ran trials
    assert len(tables["history"]) == 2 * base["train"]["epochs"]
    assert set(tables["probes"]["trial_id"]) == set(trials["trial_id"])
    assert len(tables["gaps"]) >= 2 and tables["gaps"]["pre_mean"].notna().all()

    tracker = Tracker(c.tracking)
    parent = tracker.find_sweep("multinode")
    assert parent is not None
    assert tracker.client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert parent.data.tags["headsweep.ray_job"].startswith("raysubmit_")  # which job ran it
    children = tracker.children(parent)
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.info.run_id for r in children} == set(trials["mlflow_run_id"])
    assert all(r.data.tags[PARENT] == parent.info.run_id for r in children)
    logged = {a.path for a in tracker.client.list_artifacts(parent.info.run_id, "analysis/tables")}
    assert "analysis/tables/trials.parquet" in logged

    # A laptop with the same tracking server and storage: status and analyze, no Ray.
    laptop = tmp_path / "laptop"
    assert (
        cli.main(["status", "multinode", "--tracking-uri", c.tracking, "--root", str(laptop)]) == 0
    )
    assert (
        cli.main(["analyze", "multinode", "--tracking-uri", c.tracking, "--root", str(laptop)]) == 0
    )
    again = _tables(laptop, "multinode")
    pd.testing.assert_frame_equal(
        again["trials"].sort_values("trial_id").reset_index(drop=True),
        trials.sort_values("trial_id").reset_index(drop=True),
    )


def _interval(trial_dir: Path) -> tuple[float, float]:
    rows = [json.loads(x) for x in (trial_dir / "result.json").read_text().splitlines() if x]
    return rows[0]["timestamp"] - rows[0]["time_total_s"], rows[-1]["timestamp"]


@pytest.mark.ray
def test_fractional_gpu_trials_share_the_gpu_node_and_never_go_elsewhere(two_nodes, tmp_path):
    c = two_nodes
    spec = write_spec(
        tmp_path / "standin.yaml",
        name="standin",
        base=few_seconds_base(),
        space={"aug.p_drop": {"grid": [0.0, 0.5, 1.0]}},
        resources={"cpu": 0.5, "custom": {"gpu_standin": 0.5}},
        max_concurrent=3,
    )
    root = c.base / "standin-runs"
    command = _run_sweep(spec, "standin", c.shared / "ray", root, c)
    done = _cli([*command, "--address", c.gcs], tmp_path)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    trials = _tables(root, "standin")["trials"]
    assert len(trials) == 3 and set(trials["status"]) == {"finished"}
    # Only the head advertises the stand-in: the third trial waited for it although the worker
    # had a free CPU all along.
    assert set(trials["node_id"]) == {c.head_id}
    # Half a stand-in each: two trials ran on it at the same time.
    spans = [_interval(d) for d in sorted((c.shared / "ray" / "standin").glob("contrastive_*"))]
    assert len(spans) == 3
    pairs = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1 :]]
    assert any(max(a[0], b[0]) < min(a[1], b[1]) for a, b in pairs), spans
