"""Issue 14's battery for the CLI: every refused input exits 2 with one line naming the key or
path, fast, writing nothing; unexpected errors exit 1 without a traceback unless -v; names
cannot leave the root or inject into MLflow filters; read-only commands stay read-only and
light. Most cases call `sweeps.cli.main` in-process (seconds); a few run the real entry point.
"""

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import write_spec

from sweeps import cli
from sweeps.locations import Locations, SweepError, inside
from sweeps.names import filter_literal, name_problem, tag_equals
from sweeps.overrides import SpecError, parse_overrides
from sweeps.spec import parse_spec
from sweeps.specfile import MAX_BYTES

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = 15.0  # per refused input
SERVER_LIMIT_S = 10.0  # per command against an unreachable tracking server
INJECTIONS = ["x'y", "x' or '1'='1", 'x" or "1"="1']
BAD_NAMES = ["../../etc/x", "a/b", ".hidden", "a..b", "with space", "naïve", "", "-rf", *INJECTIONS]


def run_cli(capsys, *args: str, limit: float = LIMIT_S) -> tuple[int, str, str]:
    start = time.monotonic()
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as stop:  # argparse's own refusals
        code = int(stop.code or 0)
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    assert elapsed < limit, f"{args}: {elapsed:.1f} s"
    return code, out, err


def refused(capsys, *args: str, needle: str, limit: float = LIMIT_S) -> str:
    """Exit 2, one line on stderr naming `needle`, no traceback."""
    code, _, err = run_cli(capsys, *args, limit=limit)
    lines = [line for line in err.strip().splitlines() if not line.startswith(("note:", "warn"))]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("headsweep: error:"), err
    assert needle in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def nothing_in(path: Path) -> bool:
    return not path.exists() or not any(path.iterdir())


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_run_names_are_refused_with_the_rule_before_anything_is_written(tmp_path, capsys, name):
    spec = write_spec(tmp_path / "s.yaml")
    root = tmp_path / "runs"
    line = refused(capsys, "run", spec, f"--name={name}", "--root", root, needle="--name")
    assert "A-Z a-z 0-9" in line
    assert not root.exists() and not (tmp_path / "etc").exists()


def test_a_bad_spec_name_is_refused_naming_the_key(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml", name="../up")
    refused(capsys, "run", spec, "--dry-run", "--root", tmp_path / "runs", needle="name:")


@pytest.mark.parametrize("command", ["status", "resume", "analyze"])
@pytest.mark.parametrize("name", INJECTIONS)
def test_injected_names_never_reach_a_filter(tmp_path, capsys, command, name):
    root = tmp_path / "runs"
    refused(capsys, command, name, "--root", root, needle="not a valid sweep name")
    assert not root.exists()


def test_compare_refuses_injected_names(tmp_path, capsys):
    refused(capsys, "compare", "ok", INJECTIONS[1], "--root", tmp_path, needle="NAME")


def test_filter_values_are_quoted_never_spliced():
    from mlflow.utils.search_utils import SearchUtils

    for value in ["plain", *INJECTIONS[:2]]:
        parsed = SearchUtils.parse_search_filter(tag_equals("headsweep.sweep", value))
        assert parsed == [
            {"type": "tag", "key": "headsweep.sweep", "comparator": "=", "value": value}
        ]
    for value in ["both ' and \"", "back\\slash"]:
        with pytest.raises(SpecError):
            filter_literal(value)


def test_sqlite_store_lookup_binds_names(tmp_path):
    """A real MLflow store: the injected name finds nothing; the real one is found."""
    from mlflow.tracking import MlflowClient

    from sweeps.status import find_parent
    from sweeps.store import SqliteReader

    loc = Locations.make(tmp_path)
    client = MlflowClient(loc.tracking_uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    client.create_run(exp, tags={"headsweep.role": "parent", "headsweep.sweep": "real"})
    store = SqliteReader(loc.local_store)
    assert [r.tags["headsweep.sweep"] for r in store.parents()] == ["real"]
    assert store.parents(INJECTIONS[1]) == []
    assert find_parent("real", loc).tags["headsweep.sweep"] == "real"


def test_tracker_lookups_quote_names_and_run_ids(tmp_path):
    """The MLflow-client lookups (the driver's and the trial logger's) go through tag_equals:
    a name with quotes or an `or` clause finds nothing, where spliced it would crash or match."""
    loc = Locations.make(tmp_path)
    tracker = loc.tracker()
    exp = tracker.client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = tracker.client.create_run(
        exp, tags={"headsweep.role": "parent", "headsweep.sweep": "real"}
    )
    tracker.client.create_run(exp, tags={"mlflow.parentRunId": parent.info.run_id})
    assert tracker.find_sweep("real").info.run_id == parent.info.run_id
    for name in INJECTIONS[:2]:
        assert tracker.find_sweep(name) is None
    assert len(tracker.children(parent)) == 1


def test_status_and_list_report_a_sweep_whose_driver_stopped_beating_as_crashed(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from sweeps.lock import HEARTBEAT_TAG, INTERVAL_TAG

    loc = Locations.make(tmp_path)
    client = MlflowClient(loc.tracking_uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    tags = {"headsweep.role": "parent", "headsweep.sweep": "gone", "headsweep.state": "running"}
    stale = {HEARTBEAT_TAG: str(time.time() - 3600), INTERVAL_TAG: "30"}
    client.create_run(exp, tags={**tags, **stale})
    code, out, err = run_cli(capsys, "status", "gone", "--root", tmp_path)
    assert code == 0 and ": crashed" in out and "headsweep resume gone" in out, out + err
    code, out, _ = run_cli(capsys, "list", "--root", tmp_path)
    assert code == 0 and "crashed" in out


def test_paths_built_from_names_stay_inside_root_and_storage(tmp_path):
    loc = Locations.make(tmp_path / "runs", storage="s3://bucket/sweeps")
    assert loc.tables("ok").parent == tmp_path / "runs" / "tables"
    assert loc.experiment_path("ok") == "s3://bucket/sweeps/ok"
    for bad in ("../x", "a/../../b"):
        with pytest.raises((SpecError, SweepError)):
            loc.tables(bad)
        with pytest.raises((SpecError, SweepError)):
            loc.experiment_path(bad)
    with pytest.raises(SweepError, match="outside"):
        inside(tmp_path / "runs", tmp_path / "elsewhere", "tables")
    with pytest.raises(SweepError, match="outside"):
        inside("s3://bucket/sweeps", "s3://bucket/sweeps/../other", "Tune experiment")
    assert name_problem("quickstart-20250101-120000") == ""


# --------------------------------------------------------------------------- spec files


def test_oversized_spec_file_is_refused_before_parsing(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text("name: x\n" + "#" * (MAX_BYTES + 10) + "\n")
    refused(capsys, "run", path, "--dry-run", needle=str(path))


def test_yaml_alias_bomb_is_refused(tmp_path, capsys):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, (prev, cur) in enumerate(zip("abcdefgh", "bcdefghi", strict=True)):
        refs = ", ".join([f"*{prev}"] * 10)
        lines.append(f"{cur}: &{cur} [{refs}]")
        del i
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nname: bomb\n")
    assert path.stat().st_size < 1000
    refused(capsys, "run", path, "--dry-run", needle="alias")


def test_recursive_alias_is_refused(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text("name: loop\nbase: &b {data: *b}\n")
    refused(capsys, "run", path, "--dry-run", needle=str(path))


@pytest.mark.parametrize(
    ("section", "key", "text"),
    [
        ("optim", "lr", ".inf"),
        ("train", "epochs", ".inf"),
        ("data", "n_train", ".nan"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path, capsys, section, key, text):
    spec = Path(write_spec(tmp_path / "s.yaml"))
    raw = yaml.safe_load(spec.read_text())
    raw["base"].setdefault(section, {})[key] = "PLACEHOLDER"
    spec.write_text(yaml.safe_dump(raw).replace("PLACEHOLDER", text))
    refused(capsys, "run", spec, "--dry-run", needle=f"{section}.{key}")


def test_missing_spec_and_directory_spec_name_the_path(tmp_path, capsys):
    refused(capsys, "run", tmp_path / "nope.yaml", needle=str(tmp_path / "nope.yaml"))
    refused(capsys, "trial", tmp_path, needle=str(tmp_path))


# --------------------------------------------------------------------------- roots and servers


@pytest.mark.parametrize("command", [["list"], ["status", "s"], ["compare", "a", "b"]])
def test_root_that_is_a_file_is_one_line(tmp_path, capsys, command):
    root = tmp_path / "file"
    root.write_text("")
    refused(capsys, *command, "--root", root, needle=str(root))


def test_storage_that_is_a_file_and_unwritable_root_are_refused(tmp_path, capsys, monkeypatch):
    spec = write_spec(tmp_path / "s.yaml")
    storage = tmp_path / "storage"
    storage.write_text("")
    root = tmp_path / "runs"
    refused(capsys, "run", spec, "--root", root, "--storage", storage, needle=str(storage))
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    refused(capsys, "run", spec, "--root", root, needle="--root")
    assert not root.exists()


@pytest.mark.parametrize(
    "command", [["list"], ["status", "s"], ["compare", "a", "b"], ["analyze", "s"], ["resume", "s"]]
)
def test_unreachable_tracking_server_is_one_line_for_every_command(tmp_path, capsys, command):
    with socket.socket() as sock:  # a free port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    root = tmp_path / "runs"
    args = [*command, "--tracking-uri", uri, "--root", root]
    refused(capsys, *args, needle=uri, limit=SERVER_LIMIT_S)
    assert not root.exists()


def test_silent_tracking_server_times_out_within_the_limit(tmp_path, capsys):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        line = refused(
            capsys, "list", "--tracking-uri", uri, "--root", tmp_path, needle=uri, limit=10
        )
    assert "5 s" in line


_PARENT_RUN = {
    "info": {"run_id": "r1", "experiment_id": "1", "status": "FINISHED", "start_time": 0},
    "data": {
        "tags": [
            {"key": "headsweep.role", "value": "parent"},
            {"key": "headsweep.sweep", "value": "s"},
        ]
    },
}


class _FailsMlflowsClient(http.server.BaseHTTPRequestHandler):
    """A server that answers /health and the CLI's own light REST lookups (urllib), so the
    sweep `s` is found, and then fails every call of MLflow's client (503): a server that stops
    answering in the middle of a command."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b""
        if self.path == "/health":
            code = 200
        elif "Python-urllib" not in self.headers.get("User-Agent", ""):
            code = 503
        else:
            code = 200
            found = (
                {"experiments": [{"experiment_id": "1"}]}
                if "experiments/search" in self.path
                else {"runs": [_PARENT_RUN]}
            )
            body = json.dumps(found).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("command", [["compare", "a", "b"], ["analyze", "s"]])
def test_a_server_that_stops_answering_mid_command_is_one_line_within_the_limit(
    tmp_path, capsys, command
):
    """After /health, MLflow's own client would retry for minutes; commands a user waits on
    bound its retries (sweeps.locations.QUICK_CLIENT) and end with one line, exit 2."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailsMlflowsClient)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        line = refused(capsys, *command, "--tracking-uri", uri, "--root", tmp_path, needle=uri)
    finally:
        server.shutdown()
    assert "stopped answering" in line


def test_unknown_tracking_scheme_is_refused(tmp_path, capsys):
    refused(capsys, "list", "--tracking-uri", "bogus://x", "--root", tmp_path, needle="bogus")


# --------------------------------------------------------------------------- read-only commands


@pytest.mark.parametrize(
    ("command", "code"), [(["list"], 0), (["status", "s"], 2), (["compare", "a", "b"], 2)]
)
def test_read_only_commands_create_no_store(tmp_path, capsys, command, code):
    root = tmp_path / "runs"
    got, _, err = run_cli(capsys, *command, "--root", root)
    assert got == code, err
    assert not root.exists()


FAKE_SERVER = """
import http.server, time
time.sleep(1.5)  # a server still importing: the URL must not be printed yet
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", PORT), Health).handle_request()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("answers", [True, False])
def test_ui_announces_the_url_only_once_the_server_answers(tmp_path, capsys, monkeypatch, answers):
    """MLflow's server replaced by a stand-in: one that answers /health after a delay, and one
    that dies first (the URL is never printed, exit 2 naming the exit code)."""
    port = free_port()
    script = FAKE_SERVER.replace("PORT", str(port)) if answers else "import sys; sys.exit(3)"
    real = subprocess.Popen
    monkeypatch.setattr(
        subprocess, "Popen", lambda command, **kw: real([sys.executable, "-c", script], **kw)
    )
    code, out, err = run_cli(capsys, "ui", "--port", port, "--root", tmp_path / "runs")
    url = f"http://127.0.0.1:{port}"
    if answers:
        assert code == 1 and f"at {url}" in out, out + err  # the stand-in then stops by itself
        assert "stopped on its own" in err
    else:
        assert code == 2 and url not in out and "exited with code 3" in err, out + err


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"search": {"metric": "train/bogus"}}, "search.metric"),
        ({"search": {"metric": "probe/digit/layer7"}}, "search.metric"),
        (
            {"scheduler": {"name": "asha", "metric": "online/digit/layer1"}},
            "scheduler.metric",
        ),
    ],
)
def test_metrics_the_trainable_never_reports_are_refused(tmp_path, capsys, fields, key):
    spec = write_spec(tmp_path / "s.yaml", **fields)
    refused(capsys, "run", spec, "--dry-run", needle=key)


def test_set_inside_a_swept_axis_is_refused_with_the_space_hint(tmp_path, capsys):
    spec = write_spec(
        tmp_path / "s.yaml", space={"model.head": {"grid": [{"name": "none"}, {"name": "mlp"}]}}
    )
    line = refused(
        capsys, "run", spec, "--dry-run", "--set", "model.head.name=mlp", needle="model.head"
    )
    assert "--set 'space.model.head=" in line


def test_explicit_set_wins_over_smoke_and_dry_run_prints_the_resolved_base(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml")
    code, out, err = run_cli(capsys, "run", spec, "--dry-run", "--smoke", "--set", "train.epochs=2")
    assert code == 0, err
    assert "resolved base config" in out and "epochs: 2" in out
    assert "--smoke: keeping your --set for train.epochs" in err
    raw = yaml.safe_load(Path(spec).read_text())
    assert (
        parse_spec(raw, parse_overrides(["train.epochs=2"]), smoke=True).base["train"]["epochs"]
        == 2
    )


# --------------------------------------------------------------------------- error path


def test_unexpected_errors_exit_1_with_type_and_message_traceback_only_with_v(
    tmp_path, capsys, monkeypatch
):
    def broken(args):
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    code, _, err = run_cli(capsys, "list", "--root", tmp_path)
    assert code == 1 and "RuntimeError: disk on fire" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "list", "-v", "--root", tmp_path)
    assert code == 1 and "Traceback" in err


def test_os_errors_name_their_path(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "gone" / "result.json"

    def reads(args):
        return len(missing.read_text())

    monkeypatch.setitem(cli.COMMANDS, "list", reads)
    refused(capsys, "list", "--root", tmp_path, needle=str(missing))


def test_option_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["status"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1 and "name" in err


def test_a_run_inside_a_ray_job_warns_when_results_would_land_in_its_working_dir(
    tmp_path, capsys, monkeypatch
):
    """Ray deletes a job's working directory: the default --root there would lose the
    results, so `run` says so (and names the job on the parent run, tested in test_cluster)."""
    from sweeps.locations import RAY_JOB_CONFIG, ray_job_id

    job = json.dumps({"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_x1"}})
    monkeypatch.setenv(RAY_JOB_CONFIG, job)
    assert ray_job_id() == "raysubmit_x1"
    monkeypatch.chdir(tmp_path)
    inside_job = Locations.make("runs").job_temporary()
    assert [p.split()[0] for p in inside_job] == ["--root", "--storage", "the"]
    assert Locations.make(tmp_path.parent / "kept").job_temporary() == []
    spec = write_spec(tmp_path / "s.yaml")  # refused after the warning: no GPU here
    code, _, err = run_cli(capsys, "run", str(spec), "--root", "runs", "--set", "resources.gpu=1")
    assert code == 2 and "inside this Ray job's working directory" in err, err
    monkeypatch.setenv(RAY_JOB_CONFIG, "not json")
    assert ray_job_id() is None


def test_the_git_revision_travels_with_a_job_as_an_environment_variable(monkeypatch):
    """A job's working directory has no .git: the revision comes from HEADSWEEP_GIT_REVISION
    (README's `ray job submit --runtime-env-json`), else it is recorded as unknown."""
    from sweeps import provenance

    monkeypatch.setattr(provenance, "_git", lambda cwd: None)
    monkeypatch.setenv(provenance.REVISION_ENV, "abc123\n")
    assert provenance.git_revision() == "abc123"
    monkeypatch.delenv(provenance.REVISION_ENV)
    assert provenance.git_revision() == "unknown"


def test_version_names_the_package_revision_and_lock(capsys):
    code, out, err = run_cli(capsys, "--version")
    assert code == 0, err
    assert out.startswith("headsweep 0.1.0 (git ") and "lock " in out, out
