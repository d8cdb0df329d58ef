"""The `headsweep` command: run, resume, inspect and analyse sweeps.

Exit codes: 0 success; 1 a sweep ran but some trials failed; 2 bad input (spec, options,
unreachable services); 130 interrupted (resume it with `headsweep resume NAME`).

Each command imports what it needs inside its own function, so `headsweep --help`, `list` and
`status` start without loading torch, Ray or the analysis stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from headsweep import metrics as M
from sweeps.overrides import SpecError

if TYPE_CHECKING:  # types only: the modules themselves load inside the commands
    from sweeps.driver import Outcome
    from sweeps.locations import Locations
    from sweeps.spec import SweepSpec

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _fail(message: str, code: int = EXIT_INPUT) -> int:
    print(f"headsweep: error: {message}", file=sys.stderr)
    return code


def _locations(args: argparse.Namespace) -> Locations:
    from sweeps.locations import Locations  # MLflow: only commands that track load it

    return Locations.make(
        args.root, getattr(args, "tracking_uri", None), getattr(args, "storage", None)
    )


def _load(args: argparse.Namespace) -> SweepSpec:
    from sweeps.overrides import parse_overrides  # the spec stack loads torch (trainables)
    from sweeps.spec import config_warnings, load_spec  # the spec stack loads torch (trainables)

    spec = load_spec(
        args.spec, parse_overrides(args.set or []), smoke=args.smoke, profiles=args.profile or []
    )
    for text in config_warnings(spec):
        print(f"warning: {text}", file=sys.stderr)
    return spec


# --------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    spec = _load(args)
    name = args.name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.dry_run:
        from sweeps.plan import print_plan  # dry runs only

        print_plan(spec, name)
        return EXIT_OK
    from sweeps import driver  # Ray and Tune: only commands that run sweeps load them

    loc = _locations(args)
    print(
        f"sweep {name}: {spec.num_trials()} trials of {spec.trainable} "
        f"({spec.resources.cpu:g} CPU, {spec.resources.gpu:g} GPU each)"
    )
    print(f"  tracking {loc.tracking_uri}\n  storage  {loc.experiment_path(name)}")
    outcome = driver.run(spec, name, loc, address=args.address)
    return _report(outcome, loc)


def cmd_resume(args: argparse.Namespace) -> int:
    from sweeps import driver  # Ray and Tune: only commands that run sweeps load them

    loc = _locations(args)
    print(f"resuming sweep {args.name}")
    outcome = driver.resume(args.name, loc, address=args.address)
    return _report(outcome, loc)


def _report(outcome: Outcome, loc: Locations) -> int:
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(outcome.counts.items()))
    print(f"\nsweep {outcome.name}: {counts or 'no trials'} (of {outcome.total})")
    try:
        from sweeps.results import analyze_sweep  # the analysis stack: after the sweep only

        summary = analyze_sweep(outcome.name, loc)
        print(summary.terminal_table(M.probe_target(outcome.metric) or None))
        print(f"tables and figures: {summary.directory} (every target in summary.md)")
    except Exception as exc:  # analysis must never hide the sweep's own outcome
        print(f"analysis failed: {exc} (retry with `headsweep analyze {outcome.name}`)")
    _print_mlflow_hint(loc, outcome.parent_run_id)
    if outcome.interrupted:
        print(f"interrupted: continue with `headsweep resume {outcome.name}`")
        return EXIT_INTERRUPTED
    if outcome.failed:
        print(
            f"{outcome.failed} trial(s) failed: `headsweep status {outcome.name}` and the "
            "FAILED runs in MLflow hold the errors"
        )
        return EXIT_FAILED
    return EXIT_OK


def _print_mlflow_hint(loc: Locations, run_id: str) -> None:
    if loc.tracking_uri.startswith("http"):
        print(f"MLflow: {loc.tracking_uri} (parent run {run_id})")
    else:
        print(f"MLflow: `headsweep ui --root {loc.root}` then open the parent run {run_id}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from sweeps.calibrate import cmd_calibrate as calibrate  # torch and the analysis stack

    return calibrate(_load(args), args.seeds)


def cmd_trial(args: argparse.Namespace) -> int:
    spec = _load(args)
    point = next(iter(spec.points()), {})
    for axis in spec.space:
        if axis.kind not in ("grid", "choice"):
            point[axis.key] = (
                (axis.low + axis.high) / 2
                if axis.kind != "loguniform"
                else ((axis.low * axis.high) ** 0.5)
            )
            if axis.kind == "randint":
                point[axis.key] = int(point[axis.key])
        elif axis.kind == "choice":
            point[axis.key] = axis.values[0]
    settings = spec.settings(point)
    print(f"one {spec.trainable} trial in-process at {json.dumps(point, default=str)}")
    logging.getLogger("headsweep").setLevel(logging.INFO)

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        speed = f", {m[M.THROUGHPUT]:.0f} images/s" if M.THROUGHPUT in m else ""
        print(f"  epoch {epoch}: loss {m[M.LOSS]:.4f}{speed}")

    record = spec.info.run_local(settings, on_epoch)
    for row in record.probes:
        print(f"  probe {row.target:>8} {row.tap:>8}: {row.accuracy:.3f} (dim {row.dim})")
    for key in sorted(record.metrics):
        if M.is_gap(key):
            print(f"  {key}: {record.metrics[key]:+.3f}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from sweeps.status import list_sweeps  # MLflow only

    rows = list_sweeps(_locations(args))
    if not rows:
        print("no sweeps yet")
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        print(
            f"{row['name']:<{width}}  {row['state']:<11}  {row['trials']:>5} trials  "
            f"{row['started']}"
        )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from sweeps.status import sweep_status  # MLflow only

    st = sweep_status(args.name, _locations(args))
    runs = ", ".join(f"{n} {s.lower()}" for s, n in sorted(st["runs"].items())) or "none"
    print(f"sweep {st['name']} (experiment {st['experiment']}): {st['state']}")
    print(f"  trials: {st['trials']} planned; runs: {runs}")
    print(f"  duration: {st['duration_s'] / 60:.1f} min")
    if st["best"]:
        best = st["best"]
        post = f" (post {best['post']:.3f})" if best["post"] is not None else ""
        print(f"  best {best['metric']}: {best['value']:.3f}{post} in {best['run']}")
    print(f"  parent run {st['parent_run_id']}, storage {st['storage']}")
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    loc = _locations(args)
    if loc.tracking_uri.startswith("http"):
        print(f"MLflow server: {loc.tracking_uri}")
        return EXIT_OK
    loc.root.mkdir(parents=True, exist_ok=True)
    address = f"http://{args.host}:{args.port}"
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
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    print(f"MLflow UI for {loc.root} at {address} (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_analyze(args: argparse.Namespace) -> int:
    from sweeps.results import analyze_sweep  # the analysis stack

    summary = analyze_sweep(args.name, _locations(args))
    print(summary.terminal_table())
    print(f"tables and figures: {summary.directory}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from sweeps.results import compare_sweeps  # the analysis stack

    print(compare_sweeps(args.names[0], args.names[1], _locations(args)))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from sweeps.cluster import validate_cluster  # Ray's autoscaler schema

    problems = validate_cluster(args.cluster)
    if problems:
        for problem in problems:
            print(f"{args.cluster}: {problem}", file=sys.stderr)
        return EXIT_INPUT
    print(f"{args.cluster}: valid Ray cluster config")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _env_address() -> str | None:
    """The cluster a Ray job's driver belongs to: Ray sets RAY_ADDRESS for the entrypoint of
    `ray job submit`, and a sweep submitted that way must join that cluster as ray.init() would.
    A dashboard URL there (http://...) is for the job CLI, not a cluster address."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    return address if address and not address.startswith(("http://", "https://")) else None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="headsweep",
        description="Ray Tune sweeps for projection-head research: pre- "
        "versus post-projection probe accuracy, tracked in MLflow.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(fn=fn)
        return p

    def where(p: argparse.ArgumentParser, storage: bool = False) -> None:
        p.add_argument(
            "--root",
            default=os.environ.get("HEADSWEEP_ROOT", "runs"),
            help="directory of the embedded stores (default: ./runs)",
        )
        p.add_argument(
            "--tracking-uri",
            help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///ROOT/mlflow.db)",
        )
        if storage:
            p.add_argument(
                "--storage",
                help="Tune storage: s3://..., gs://... or a shared directory (default: ROOT/ray)",
            )

    def spec_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("spec", help="sweep spec YAML, e.g. sweeps/quickstart.yaml")
        p.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override a trial-config key (train.epochs=2) or a spec key "
            "(search.num_samples=4); repeatable",
        )
        p.add_argument(
            "--profile",
            action="append",
            metavar="NAME",
            help="apply a named override set from the spec's `profiles` (e.g. cpu); "
            "repeatable, applied in order before --set",
        )
        p.add_argument(
            "--smoke",
            action="store_true",
            help="shrink every trial (tiny data, one epoch) for a quick check",
        )

    p = add("run", cmd_run, "validate a spec and run its sweep on Ray Tune")
    spec_args(p)
    p.add_argument("--name", help="sweep name (default: SPEC_NAME-YYYYmmdd-HHMMSS)")
    p.add_argument(
        "--address",
        default=_env_address(),
        help="Ray cluster address (default: $RAY_ADDRESS, which `ray job submit` sets, else "
        "start Ray locally); 'auto' on a cluster's head node",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and print the trial list with resources; start nothing",
    )
    where(p, storage=True)

    p = add("resume", cmd_resume, "continue an interrupted sweep")
    p.add_argument("name")
    p.add_argument(
        "--address",
        default=_env_address(),
        help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)",
    )
    where(p)

    p = add("list", cmd_list, "list stored sweeps (no Ray needed)")
    where(p)
    p = add("status", cmd_status, "counts by state, best metrics and duration of a sweep")
    p.add_argument("name")
    where(p)
    p = add("ui", cmd_ui, "start the MLflow UI on this root's tracking store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    where(p)
    p = add("trial", cmd_trial, "run one trial of a spec in-process, without Ray (debugging)")
    spec_args(p)
    p = add(
        "calibrate",
        cmd_calibrate,
        "train a spec's control (no head, p_drop 0) in-process and check that the instrument "
        "can show its trends (exit 1 if not)",
    )
    spec_args(p)
    p.add_argument("--seeds", type=int, default=1, help="control seeds to train (default: 1)")
    p = add(
        "analyze",
        cmd_analyze,
        "build the Parquet tables and figures of a sweep and log them to its MLflow parent run",
    )
    p.add_argument("name")
    where(p)
    p = add("compare", cmd_compare, "two sweeps' pre/post gap tables side by side")
    p.add_argument("names", nargs=2, metavar="NAME")
    where(p)
    p = add("validate", cmd_validate, "check a Ray cluster launcher YAML offline")
    p.add_argument("cluster", help="e.g. cluster.yaml")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its level on import
    from sweeps.locations import SweepError  # after the logging level: it imports MLflow

    try:
        code: int = args.fn(args)
        return code
    except SpecError as exc:
        return _fail(str(exc))
    except (SweepError, ConnectionError, FileNotFoundError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
