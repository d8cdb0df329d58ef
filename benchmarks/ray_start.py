"""Where a local Ray start's CPU goes (issue 12, acceptance 2: the sweep's fixed cost).

    python -m benchmarks.ray_start                # 3 rounds, as many actors as cores
    python -m benchmarks.ray_start --rounds 1 --actors 1

Each round runs in a fresh interpreter (a subprocess of this module), as `headsweep run` does up
to its first trials: it imports the driver (`sweeps.driver`: Ray, torch, MLflow, Tune), starts
a local Ray with the driver's own `start_ray`, then creates one-CPU actors that import what a
contrastive trial imports (torch, `trainables.contrastive`), as Tune's trial actors do, and
waits until every actor has. Wall-clocked per phase. Then the CPU seconds (user + system) of
every process in the driver's tree, grouped by role (the driver, each of Ray's daemons, the
actors), against the machine's busy CPU seconds over the same time: on 2 cores, a phase is
CPU-bound when the two are close to twice its wall time.
Results: a table on stdout and benchmarks/results/ray_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.proc import busy_ticks, command_line, tree_ticks

OUT = Path(__file__).resolve().parent / "results" / "ray_start.json"
# (role, what its command line contains), first match wins; the driver is matched by pid
ROLES = (
    ("trial actors", "ray::Importer"),
    ("dashboard agent", "ray::DashboardAgent"),
    ("runtime env agent", "ray::RuntimeEnvAgent"),
    ("dashboard (API server)", "dashboard/dashboard.py"),
    ("log monitor", "log_monitor.py"),
    ("autoscaler monitor", "autoscaler/_private/monitor.py"),
    ("GCS server", "gcs_server"),
    ("raylet", "raylet"),
)


def role(command: str) -> str:
    return next((name for name, mark in ROLES if mark in command), "other")


def cpu_by_role(ticks: dict[int, int], commands: dict[int, str], driver: int) -> dict[str, float]:
    hz = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid, count in ticks.items():
        name = "driver" if pid == driver else role(commands.get(pid, ""))
        out[name] = out.get(name, 0.0) + count / hz
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def one_round(actors: int) -> dict[str, object]:
    """The child: one driver's start, measured from inside it."""
    busy0, start = busy_ticks(), time.time()
    from sweeps import driver  # what `headsweep run` imports before its checks

    imported = time.time()
    driver.start_ray(None)
    started = time.time()
    import ray

    @ray.remote(num_cpus=1)
    class Importer:
        def ready(self) -> int:
            import torch  # noqa: F401 - what a trial actor imports first

            import trainables.contrastive  # noqa: F401

            return os.getpid()

    handles = [Importer.remote() for _ in range(actors)]  # type: ignore[attr-defined]
    ray.get([h.ready.remote() for h in handles])
    ready = time.time()
    ticks = tree_ticks(os.getpid())
    busy = (busy_ticks() - busy0) / os.sysconf("SC_CLK_TCK")
    roles = cpu_by_role(ticks, {pid: command_line(pid) for pid in ticks}, os.getpid())
    ray.shutdown()
    return {
        "import_driver_s": round(imported - start, 2),
        "ray_init_s": round(started - imported, 2),
        "actors_ready_s": round(ready - started, 2),
        "wall_s": round(ready - start, 2),
        "tree_cpu_s": round(sum(roles.values()), 2),
        "machine_busy_cpu_s": round(busy, 2),
        "cpu_by_role_s": roles,
    }


def summary(rounds: list[dict]) -> dict[str, object]:
    """Median over rounds of every phase and role (a role absent from a round counts 0)."""
    keys = ("import_driver_s", "ray_init_s", "actors_ready_s", "wall_s", "tree_cpu_s")
    names = {n for r in rounds for n in r["cpu_by_role_s"]}
    roles = {n: statistics.median(r["cpu_by_role_s"].get(n, 0.0) for r in rounds) for n in names}
    return {
        **{k: statistics.median(r[k] for r in rounds) for k in (*keys, "machine_busy_cpu_s")},
        "cpu_by_role_s": dict(sorted(roles.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--actors", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one_round(args.actors)))
        return 0
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    rounds = []
    for i in range(args.rounds):
        command = [sys.executable, "-m", "benchmarks.ray_start", "--child"]
        done = subprocess.run(
            [*command, "--actors", str(args.actors)],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            check=True,
        )
        rounds.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"round {i + 1}: {json.dumps(rounds[-1])}", flush=True)
    result = {"actors": args.actors, "load_average": os.getloadavg(), "rounds": rounds}
    result["median"] = summary(rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    median = result["median"]
    print(f"\nmedian of {args.rounds} round(s), {args.actors} actor(s):")
    for key, value in median.items():
        if key != "cpu_by_role_s":
            print(f"  {key:22s} {value:7.2f}")
    for name, seconds in median["cpu_by_role_s"].items():
        print(f"  cpu: {name:22s} {seconds:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
