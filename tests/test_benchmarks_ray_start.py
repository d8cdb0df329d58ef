"""benchmarks/ray_start.py: the grouping of a driver's process tree by role, the medians over
rounds, and one real round (a local Ray, one actor importing what a trial imports)."""

import importlib
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("benchmarks.ray_start")


def test_processes_group_by_role_and_the_driver_by_pid(bench):
    hz = os.sysconf("SC_CLK_TCK")
    commands = {
        10: "python -m benchmarks.ray_start --child",
        11: "/venv/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/ray",
        12: "/venv/ray/core/src/ray/raylet/raylet --raylet_socket_name=x",
        13: "ray::Importer",
        14: "ray::Importer",
        15: "ray::DashboardAgent",
        16: "python -u /venv/ray/autoscaler/_private/monitor.py --logs-dir=x",
        17: "something else",
    }
    ticks = {pid: hz for pid in commands} | {13: 3 * hz}
    got = bench.cpu_by_role(ticks, commands, driver=10)
    assert got == {
        "trial actors": 4.0,
        "GCS server": 1.0,
        "autoscaler monitor": 1.0,
        "dashboard agent": 1.0,
        "driver": 1.0,
        "other": 1.0,
        "raylet": 1.0,
    }
    assert next(iter(got)) == "trial actors"  # the largest first


def test_summary_takes_medians_and_counts_a_missing_role_as_zero(bench):
    def one(wall, roles):
        return {
            "import_driver_s": 1.0,
            "ray_init_s": 2.0,
            "actors_ready_s": wall - 3.0,
            "wall_s": wall,
            "tree_cpu_s": sum(roles.values()),
            "machine_busy_cpu_s": 2 * wall,
            "cpu_by_role_s": roles,
        }

    rounds = [
        one(10.0, {"driver": 2.0}),
        one(12.0, {"driver": 4.0, "raylet": 1.0}),
        one(11.0, {"driver": 3.0, "raylet": 3.0}),
    ]
    got = bench.summary(rounds)
    assert got["wall_s"] == 11.0 and got["machine_busy_cpu_s"] == 22.0
    assert list(got["cpu_by_role_s"].items()) == [("driver", 3.0), ("raylet", 1.0)]


@pytest.mark.ray
def test_one_real_round_accounts_the_actor_and_the_daemons(bench, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "ray_start.json"
    assert bench.main(["--rounds", "1", "--actors", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (only,) = result["rounds"]
    roles = only["cpu_by_role_s"]
    assert roles["trial actors"] > 0.5  # it imported torch
    assert {"driver", "GCS server", "raylet"} <= set(roles)
    assert only["wall_s"] == pytest.approx(
        only["import_driver_s"] + only["ray_init_s"] + only["actors_ready_s"], abs=0.05
    )
    assert result["median"]["wall_s"] == only["wall_s"]
