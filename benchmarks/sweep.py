"""Sweep efficiency (issue 12): the quickstart sweep against the same trials without Ray.

    python -m benchmarks.sweep                    # make bench-sweep: 3 rounds of the quickstart
    python -m benchmarks.sweep --quick            # smoke run: --smoke trials, 1-2 min on 2 cores
    python -m benchmarks.sweep --rounds 5 --wait-load 0.3   # first wait for a quiet machine

Each round runs, one after the other (which goes first alternates between rounds):

  sweep    `headsweep run SPEC` as a subprocess in a fresh temporary root (its own SQLite
           store and Tune storage), wall-clocked from launch to exit.
  no Ray   the same trials (each trial's config from the spec: `SweepSpec.points()` in Tune's
           order, `trial_config`) as a subprocess of this module: it parses the spec as the
           sweep does, then runs the trials in a spawn `ProcessPoolExecutor` of as many workers
           as the sweep runs trials at once (max_concurrent, and whole trials of resources.cpu
           on this machine's cores), each trial with the torch threads and OMP_NUM_THREADS Ray
           gives it (resources.cpu); a contrastive trial is `headsweep.pretrain` with the
           trainable's checkpoint writes (state every checkpoint_every epochs, the record at
           the end) into a temporary directory, other trainables their `run_local` (the
           project's own modules, as `headsweep trial` runs a trial: they import Ray's modules
           but start no Ray). Wall-clocked from launch to the end of its last trial: a run
           without Ray has nothing left to do then, so its exit (the interpreter teardown of
           its workers and its own) is left out (recorded as process_wall_s), which counts
           against the sweep rather than for it.

Per round: the sweep's wall time; its fixed cost before the first trial (launch to the first
trial's start as Tune's callbacks saw it, the `headsweep.timing.first_trial_start` tag the
driver writes on the parent run) and after the last (the last trial's end,
`headsweep.timing.last_trial_end`, to the process's exit: Tune's teardown, the analysis, Ray's
shutdown); the run without Ray's wall time and its time before the first trial; the
efficiency, no-Ray wall / sweep wall; and whether both ran the same trials (their default
metric, matched by the sweep's run names).
Then min / median / max over the rounds, against the targets (efficiency >= 0.9, fixed cost
<= 10 s). Other processes change every figure: the load average and the share of the CPU
others used during each run are recorded beside it. Results: a table on stdout and
benchmarks/results/sweep.json (sweep-quick.json for --quick).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.proc import busy_ticks, tree_ticks

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SPEC = REPO / "sweeps" / "quickstart.yaml"
EFFICIENCY_TARGET = 0.9
FIXED_TARGET_S = 10.0
STATS = (
    "sweep_wall_s",
    "before_first_trial_s",
    "after_last_trial_s",
    "fixed_s",
    "no_ray_wall_s",
    "no_ray_before_first_trial_s",
    "efficiency",
)


# --------------------------------------------------------------------------- arithmetic


def phases(launch: float, wall: float, first_start: float, last_end: float) -> dict[str, float]:
    """A run's wall time split around its trials: launch and first/last are epoch seconds of
    the same clock; the run exited `wall` seconds after its launch."""
    before = first_start - launch
    after = launch + wall - last_end
    return {
        "wall_s": wall,
        "before_first_trial_s": before,
        "after_last_trial_s": after,
        "fixed_s": before + after,
        "trials_s": last_end - first_start,
    }


def efficiency(no_ray_wall: float, sweep_wall: float) -> float:
    """The same trials without Ray over the sweep's wall time (1 = Ray costs nothing)."""
    return no_ray_wall / sweep_wall if sweep_wall > 0 else math.nan


def round_row(sweep: Mapping[str, float], no_ray: Mapping[str, float]) -> dict[str, float]:
    """One round's figures (the keys of STATS) from the two runs' `phases`."""
    return {
        "sweep_wall_s": sweep["wall_s"],
        "before_first_trial_s": sweep["before_first_trial_s"],
        "after_last_trial_s": sweep["after_last_trial_s"],
        "fixed_s": sweep["fixed_s"],
        "no_ray_wall_s": no_ray["wall_s"],
        "no_ray_before_first_trial_s": no_ray["before_first_trial_s"],
        "efficiency": efficiency(no_ray["wall_s"], sweep["wall_s"]),
    }


def spread(values: Iterable[float]) -> dict[str, float]:
    found = [v for v in values if not math.isnan(v)]
    if not found:
        return {"min": math.nan, "median": math.nan, "max": math.nan}
    return {"min": min(found), "median": statistics.median(found), "max": max(found)}


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """min / median / max of every figure over the rounds, and the targets: met by the
    median, and by every round (the worst efficiency, the largest fixed cost)."""
    stats = {key: spread(row[key] for row in rows) for key in STATS}
    eff, fixed = stats["efficiency"], stats["fixed_s"]
    return {
        "rounds": len(rows),
        "stats": stats,
        "targets": {
            "efficiency_min": EFFICIENCY_TARGET,
            "fixed_max_s": FIXED_TARGET_S,
            "median_meets": eff["median"] >= EFFICIENCY_TARGET
            and fixed["median"] <= FIXED_TARGET_S,
            "every_round_meets": eff["min"] >= EFFICIENCY_TARGET and fixed["max"] <= FIXED_TARGET_S,
        },
    }


def concurrency(max_concurrent: int, cpu: float, gpu: float, trials: int) -> int:
    """Trials at once as the sweep runs them on this machine: the spec's max_concurrent (0 =
    as many as fit) and whole trials of its resources on this machine's CPUs (and GPUs)."""
    fit = int((os.cpu_count() or 1) // cpu) if cpu > 0 else trials
    if gpu > 0:
        import torch

        fit = min(fit, int(torch.cuda.device_count() // gpu))
    limit = max_concurrent or trials
    return max(1, min(fit, limit, trials))


# --------------------------------------------------------------------------- machine load


def _busy_ticks() -> int | None:
    try:
        return busy_ticks()
    except (OSError, ValueError):
        return None


class Load:
    """The load average and the share of the machine's CPU other processes used while a run
    went (0: the machine was the run's; 0.5: one of two cores busy elsewhere).

    A run's own CPU is that of this process and all its descendants, sampled every
    `period` s from /proc: a sweep's Ray processes (GCS, raylet, workers) are descendants of
    its driver but are never waited for, so the children's rusage would leave them out and
    count them as others' (81% in the first measurement). A process that exits between two
    samples loses at most `period` s of its CPU to the others' share."""

    def __init__(self, period: float = 0.5) -> None:
        self.period = period
        self.start: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="load-sampler", daemon=True)

    def _sample(self) -> None:
        while True:
            self.last |= tree_ticks(os.getpid())
            if self._stop.wait(self.period):
                return

    def __enter__(self) -> Load:
        self.busy, self.t = _busy_ticks(), time.perf_counter()
        self.start = tree_ticks(os.getpid())
        self.load_start = os.getloadavg()[0]
        self._sampler.start()
        return self

    def own_seconds(self) -> float:
        ticks = sum(v - self.start.get(pid, 0) for pid, v in self.last.items())
        return ticks / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._sampler.join()
        self.last |= tree_ticks(os.getpid())
        busy, t = _busy_ticks(), time.perf_counter()
        self.others: float | None = None
        if busy is not None and self.busy is not None and t > self.t:
            seconds = (busy - self.busy) / os.sysconf("SC_CLK_TCK")
            capacity = (t - self.t) * (os.cpu_count() or 1)
            self.others = max(0.0, (seconds - self.own_seconds()) / capacity)

    def record(self) -> dict[str, float | None]:
        return {"load_avg_1m": self.load_start, "others_cpu": self.others}


# --------------------------------------------------------------------------- the sweep


def _headsweep() -> list[str]:
    script = Path(sys.executable).parent / "headsweep"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sweeps.cli"]


def _environment() -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env.pop("MLFLOW_TRACKING_URI", None)  # every run passes its own --tracking-uri
    return env


def spec_options(smoke: bool, sets: Sequence[str]) -> list[str]:
    return [*(["--smoke"] if smoke else []), *(f"--set={s}" for s in sets)]


def run_sweep(spec: Path, options: list[str], root: Path, name: str) -> dict[str, Any]:
    """`headsweep run` in `root`; its phases from the driver's timing tags."""
    from sweeps.phases import timing
    from sweeps.store import SqliteReader

    store = root / "mlflow.db"
    command = [
        *_headsweep(),
        "run",
        str(spec),
        *options,
        "--name",
        name,
        "--root",
        str(root),
        "--tracking-uri",
        f"sqlite:///{store}",
    ]
    log = root / "sweep.log"
    with Load() as load, log.open("w") as out:
        launch, start = time.time(), time.perf_counter()
        code = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, env=_environment(), cwd=REPO
        ).returncode
        wall = time.perf_counter() - start
    text = log.read_text()
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited {code}:\n{text[-3000:]}")
    reader = SqliteReader(store)
    [parent] = reader.parents(name)
    tags = timing(parent.tags)
    if "first_trial_start" not in tags or "last_trial_end" not in tags:
        raise RuntimeError(f"no trial timings on the parent run: {sorted(tags)}")
    metrics = {child.name: child.metrics for child in reader.children(parent)}
    return {
        **phases(launch, wall, tags["first_trial_start"], tags["last_trial_end"]),
        "driver": tags,
        "metrics": metrics,
        **load.record(),
    }


# --------------------------------------------------------------------------- without Ray


def _load_trainables() -> None:
    """A worker's start: the trainables' imports, as a trial actor's start under Tune."""
    import trainables  # noqa: F401 - torch, headsweep, the trainables


def _trial(trainable: str, config: dict[str, Any], checkpoint_every: int, cpus: float) -> dict:
    """One trial in a worker process: what the trainable does under Tune, without Tune."""
    start = time.time()
    import torch

    from trainables import TRAINABLES

    torch.set_num_threads(max(1, int(cpus)))  # trainables.common.use_trial_resources
    info = TRAINABLES[trainable]
    settings = info.parse(config)
    if trainable == "contrastive":
        record = _contrastive(settings, checkpoint_every, cpus)
    else:
        record = info.run_local(settings, None)
    return {
        "start": start,
        "end": time.time(),
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        "metrics": record.table_metrics(),
    }


def _contrastive(cfg: Any, checkpoint_every: int, cpus: float) -> Any:
    """`trainables.contrastive.contrastive` with its checkpoints written to a temporary
    directory instead of handed to Tune."""
    from headsweep import pretrain
    from headsweep.atomic import write_text
    from trainables.common import STATE_FILE, config_file, final_files
    from trainables.contrastive import record_of
    from trainables.manifest import write_manifest

    epochs = cfg.train.epochs
    resolved = config_file(cfg.to_dict())
    with tempfile.TemporaryDirectory(prefix="hs-bench-trial-") as tmp:

        def save(files: Mapping[str, str], state: Any = None) -> None:
            with tempfile.TemporaryDirectory(dir=tmp) as directory:
                if state is not None:
                    state.save(Path(directory) / STATE_FILE)
                for name, text in files.items():
                    write_text(Path(directory) / name, text)
                write_manifest(directory)

        def on_epoch(epoch: int, metrics: dict[str, float], state: Any) -> None:
            if checkpoint_every and (epoch % checkpoint_every == 0 or epoch == epochs):
                save(resolved, state)

        record = record_of(pretrain(cfg, on_epoch=on_epoch), {"cpu": cpus, "gpu": 0.0})
        save(final_files(record))
    return record


def no_ray_main(spec_path: str, smoke: bool, sets: Sequence[str], out: Path) -> None:
    """The child process of a run without Ray: parse the spec, run its trials in a pool."""
    from sweeps.overrides import parse_overrides
    from sweeps.spec import parse_spec
    from sweeps.specfile import read_spec_file

    spec = parse_spec(
        read_spec_file(spec_path), parse_overrides(list(sets)), smoke=smoke, cwd=Path.cwd()
    )
    points = list(spec.points())
    workers = concurrency(spec.max_concurrent, spec.resources.cpu, spec.resources.gpu, len(points))
    jobs = [
        (spec.trainable, spec.trial_config(p), spec.checkpoint_every, spec.resources.cpu)
        for p in points
    ]
    spawn = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_load_trainables) as pool:
        done = list(pool.map(_trial, *zip(*jobs, strict=True)))
    out.write_text(json.dumps({"workers": workers, "trials": done}))  # in the order of points


def run_no_ray(
    spec: Path, smoke: bool, sets: Sequence[str], root: Path, cpus: float, names: list[str]
) -> dict:
    """The trials without Ray as a subprocess (`no_ray_main`), wall-clocked like the sweep;
    `names`: the sweep's run names of the spec's points, in order."""
    out = root / "no-ray.json"
    command = [sys.executable, "-m", "benchmarks.sweep", "--no-ray-child", str(out), str(spec)]
    command += spec_options(smoke, sets)
    env = {**_environment(), "OMP_NUM_THREADS": str(max(1, int(cpus)))}  # as Ray sets it
    log = root / "no-ray.log"
    with Load() as load, log.open("w") as stream:
        launch, start = time.time(), time.perf_counter()
        code = subprocess.run(
            command, stdout=stream, stderr=subprocess.STDOUT, env=env, cwd=REPO
        ).returncode
        wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited {code}:\n{log.read_text()[-3000:]}")
    found = json.loads(out.read_text())
    trials = found["trials"]
    first, last = min(t["start"] for t in trials), max(t["end"] for t in trials)
    return {
        # done when its last trial is: a script without Ray has nothing left to do (its exit,
        # the workers' and its own interpreter teardown, is left out: process_wall_s)
        **phases(launch, last - launch, first, last),
        "process_wall_s": wall,
        "workers": found["workers"],
        "threads": sorted({t["threads"] for t in trials}),
        "metrics": {name: t["metrics"] for name, t in zip(names, trials, strict=True)},
        **load.record(),
    }


def run_names(spec: Any) -> list[str]:
    """The sweep's child-run names of a spec's points, in order (`sweeps.trial_logger`)."""
    from headsweep.configtree import POINT
    from sweeps.trial_logger import run_name

    axes = tuple(a.key for a in spec.space)
    return [run_name({POINT: point}, axes) for point in spec.points()]


def same_trials(
    sweep: Mapping[str, Mapping[str, float]], no_ray: Mapping[str, Mapping[str, float]], metric: str
) -> float:
    """The largest difference of `metric` between the sweep's trials and the same trials
    without Ray (matched by run name); NaN when the names do not match."""
    if set(sweep) != set(no_ray):
        return math.nan
    gaps = [abs(sweep[n].get(metric, math.nan) - no_ray[n].get(metric, math.nan)) for n in sweep]
    return max(gaps, default=math.nan)


# --------------------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    from importlib import metadata

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "ray", "mlflow"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "missing"
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), **versions}


def wait_for_quiet(max_load: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(15)


def bench(spec: Path, smoke: bool, sets: Sequence[str], rounds: int, keep: bool) -> dict[str, Any]:
    from sweeps.overrides import parse_overrides
    from sweeps.spec import parse_spec
    from sweeps.specfile import read_spec_file

    parsed = parse_spec(
        read_spec_file(str(spec)), parse_overrides(list(sets)), smoke=smoke, cwd=REPO
    )
    trials = parsed.num_trials()
    workers = concurrency(parsed.max_concurrent, parsed.resources.cpu, parsed.resources.gpu, trials)
    metric = parsed.default_metric()
    names = run_names(parsed)
    options = spec_options(smoke, sets)
    started, load_start = time.perf_counter(), list(os.getloadavg())
    runs: list[dict[str, Any]] = []
    for index in range(rounds):
        root = Path(tempfile.mkdtemp(prefix="hs-bench-sweep-"))
        try:
            order = ("sweep", "no_ray") if index % 2 == 0 else ("no_ray", "sweep")
            got: dict[str, dict[str, Any]] = {}
            for which in order:
                if which == "sweep":
                    (root / "sweep").mkdir()
                    got[which] = run_sweep(spec, options, root / "sweep", f"bench-{index}")
                else:
                    (root / "no-ray").mkdir()
                    got[which] = run_no_ray(
                        spec, smoke, sets, root / "no-ray", parsed.resources.cpu, names
                    )
            row = round_row(got["sweep"], got["no_ray"])
            runs.append(
                {
                    "round": index,
                    "order": list(order),
                    **row,
                    "metric_max_diff": same_trials(
                        got["sweep"].pop("metrics"), got["no_ray"].pop("metrics"), metric
                    ),
                    "sweep": got["sweep"],
                    "no_ray": got["no_ray"],
                }
            )
            print(line(runs[-1]), flush=True)
        finally:
            if keep:
                print(f"  kept {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.sweep " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "settings": {
            "spec": str(spec.relative_to(REPO) if spec.is_relative_to(REPO) else spec),
            "smoke": smoke,
            "set": list(sets),
            "trials": trials,
            "concurrency": workers,
            "cpu_per_trial": parsed.resources.cpu,
            "metric": metric,
        },
        "load_avg_at_start": load_start,
        "load_avg_at_end": list(os.getloadavg()),
        "seconds": time.perf_counter() - started,
        "runs": runs,
        "summary": summarise(runs),
    }


def line(run: Mapping[str, Any]) -> str:
    others = [run[k].get("others_cpu") for k in ("sweep", "no_ray")]
    share = "/".join("?" if v is None else f"{v:.0%}" for v in others)
    return (
        f"round {run['round']}: sweep {run['sweep_wall_s']:.1f} s (before first trial "
        f"{run['before_first_trial_s']:.1f} s, after last {run['after_last_trial_s']:.1f} s, "
        f"fixed {run['fixed_s']:.1f} s); no Ray {run['no_ray_wall_s']:.1f} s (before first "
        f"trial {run['no_ray_before_first_trial_s']:.1f} s; its process exited after "
        f"{run['no_ray']['process_wall_s']:.1f} s); efficiency {run['efficiency']:.3f}; "
        f"metric diff {run['metric_max_diff']:.2g}; others' CPU {share}"
    )


def table(result: Mapping[str, Any]) -> str:
    s = result["summary"]
    rows = [f"{'':32s} {'min':>8s} {'median':>8s} {'max':>8s}"]
    for key in STATS:
        v = s["stats"][key]
        rows.append(f"{key:32s} {v['min']:8.3f} {v['median']:8.3f} {v['max']:8.3f}")
    t = s["targets"]
    rows.append(
        f"targets: efficiency >= {t['efficiency_min']}, fixed <= {t['fixed_max_s']:g} s: "
        f"median {'met' if t['median_meets'] else 'NOT met'}, every round "
        f"{'met' if t['every_round_meets'] else 'NOT met'} ({s['rounds']} rounds)"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path, default=SPEC, help="sweep spec YAML")
    parser.add_argument("--quick", action="store_true", help="smoke run: the spec's --smoke trials")
    parser.add_argument("--smoke", action="store_true", help="the spec's --smoke trials")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="as headsweep's --set"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (sweep + no Ray each)")
    parser.add_argument(
        "--out", type=Path, help="JSON file (default: benchmarks/results/sweep.json)"
    )
    parser.add_argument("--keep", action="store_true", help="keep each round's temporary root")
    parser.add_argument(
        "--wait-load",
        type=float,
        default=0.0,
        help="first wait (up to 10 min) for the 1-min load average to drop below this",
    )
    parser.add_argument("--no-ray-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    smoke = args.smoke or args.quick
    if args.no_ray_child is not None:
        no_ray_main(str(args.spec), smoke, args.set, args.no_ray_child)
        return None
    if args.rounds < 1:
        parser.error("--rounds: need at least 1")
    if args.wait_load:
        wait_for_quiet(args.wait_load, timeout=600)
    result = bench(args.spec.resolve(), smoke, args.set, args.rounds, args.keep)
    print(table(result))
    print(
        f"\n{result['seconds']:.0f} s; load average {result['load_avg_at_start'][0]:.2f} at "
        f"start, {result['load_avg_at_end'][0]:.2f} at end"
    )
    out = args.out or RESULTS / ("sweep-quick.json" if args.quick else "sweep.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out}")
    return result


if __name__ == "__main__":
    main()
