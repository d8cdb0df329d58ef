"""The `headsweep` command: run, resume, inspect and analyse sweeps.

Exit codes: 0 success; 1 a sweep ran but some trials failed, or an unexpected error (its type
and message; the traceback with -v); 2 anything the user can fix (spec, options, names, paths,
an unreachable tracking server), as one line naming the key or path; 130 interrupted (resume it
with `headsweep resume NAME`).

Each command imports what it needs inside its own function, so `headsweep --help`, `list`,
`status`, `compare` and `ui` start without loading torch or Ray (and `list`/`status` without
MLflow). Names, paths and the tracking server are checked before anything is written.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from headsweep import metrics as M
from sweeps.cli_parser import parser
from sweeps.locations import Locations, SweepError, check_tracking_uri, quick_mlflow_client
from sweeps.lock import refuse_if_driven  # the standard library only
from sweeps.names import check_name
from sweeps.overrides import SpecError
from sweeps.server_errors import tracking_failure

if TYPE_CHECKING:  # types only: the modules themselves load inside the commands
    from sweeps.driver import Outcome
    from sweeps.spec import SweepSpec

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _fail(message: str, code: int = EXIT_INPUT) -> int:
    print(f"headsweep: error: {' '.join(message.split())}", file=sys.stderr)  # one line
    return code


def _locations(args: argparse.Namespace, write: bool = False, driver: bool = False) -> Locations:
    """Where the command reads and writes, checked: --root/--storage are directories (and
    writable when the command writes), the tracking store answers within 5 s. Commands other
    than the drivers (run, resume) also give up quickly on a server that stops answering."""
    if not driver:
        quick_mlflow_client()
    loc = Locations.make(
        args.root, getattr(args, "tracking_uri", None), getattr(args, "storage", None)
    )
    if write:
        loc.check_writable()
    check_tracking_uri(loc.tracking_uri)
    return loc


def _load(args: argparse.Namespace) -> SweepSpec:
    from sweeps.overrides import parse_overrides
    from sweeps.specfile import read_spec_file

    # The file and the --set syntax first: a missing or oversized file fails in a second,
    # before the spec stack loads torch (the trainables).
    raw = read_spec_file(args.spec)
    overrides = parse_overrides(args.set or [])
    from sweeps.spec import config_warnings, parse_spec

    spec = parse_spec(raw, overrides, smoke=args.smoke, profiles=args.profile or [], cwd=Path.cwd())
    for text in config_warnings(spec):
        print(f"warning: {text}", file=sys.stderr)
    for text in spec.notes:
        print(f"note: {text}", file=sys.stderr)
    return spec


# --------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    if args.name is not None:  # before the spec loads (seconds): a bad name fails at once
        check_name(args.name, "--name")
    spec = _load(args)
    name = args.name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.dry_run:
        from sweeps.plan import print_plan  # dry runs only

        print_plan(spec, name)
        return EXIT_OK
    # before Ray and MLflow load, before anything is written
    loc = _locations(args, write=True, driver=True)
    loc.experiment_path(name)  # inside --storage, or refused
    for place in loc.job_temporary():
        print(
            f"warning: {place} is inside this Ray job's working directory, which Ray deletes "
            "when the job ends: pass --root/--storage/--tracking-uri (or set HEADSWEEP_ROOT) "
            "to keep the results",
            file=sys.stderr,
        )
    from sweeps import driver  # Ray and Tune: only commands that run sweeps load them

    print(
        f"sweep {name}: {spec.num_trials()} trials of {spec.trainable} "
        f"({spec.resources.cpu:g} CPU, {spec.resources.gpu:g} GPU each)"
    )
    print(f"  tracking {loc.tracking_uri}\n  storage  {loc.experiment_path(name)}")
    outcome = driver.run(spec, name, loc, address=args.address)
    return _report(outcome, loc, driver.stop_ray_in_background())


def cmd_resume(args: argparse.Namespace) -> int:
    check_name(args.name, "NAME")
    loc = _locations(args, write=True, driver=True)
    from sweeps.status import experiment_of, find_parent  # read-only: creates no store

    experiment = experiment_of(find_parent(args.name, loc), args.name)
    if experiment:  # a live driver's sweep is refused now, not after Ray and Tune load
        refuse_if_driven(experiment, args.name)
    from sweeps import driver  # Ray and Tune: only commands that run sweeps load them

    print(f"resuming sweep {args.name}")
    outcome = driver.resume(args.name, loc, address=args.address)
    return _report(outcome, loc, driver.stop_ray_in_background())


def _report(outcome: Outcome, loc: Locations, ray_stopping: threading.Thread | None = None) -> int:
    """The sweep's outcome, tables and verdicts; Ray, no longer needed, stops meanwhile on
    `ray_stopping` (joined before the command returns)."""
    try:
        return _summarise(outcome, loc)
    finally:
        if ray_stopping is not None:
            ray_stopping.join()


def _summarise(outcome: Outcome, loc: Locations) -> int:
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(outcome.counts.items()))
    print(f"\nsweep {outcome.name}: {counts or 'no trials'} (of {outcome.total})")
    verdicts, analysed = "", False
    try:
        from sweeps.results import analyze_sweep  # the analysis stack: after the sweep only

        summary = analyze_sweep(outcome.name, loc)
        print(summary.terminal_table(M.probe_target(outcome.metric) or None, verdicts=False))
        print(f"tables and figures: {summary.directory} (every target in summary.md)")
        verdicts, analysed = summary.verdict_text(), not summary.unreadable
    except Exception as exc:  # analysis must never hide the sweep's own outcome
        print(f"analysis failed: {exc} (retry with `headsweep analyze {outcome.name}`)")
    _print_mlflow_hint(loc, outcome)
    if verdicts:  # the answer last, where the eye lands when the sweep ends
        print(verdicts.lstrip("\n"))
    if outcome.interrupted:
        print(f"interrupted: continue with `headsweep resume {outcome.name}`")
        return EXIT_INTERRUPTED
    if outcome.failed:
        print(
            f"{outcome.failed} trial(s) failed: `headsweep status {outcome.name}` and the "
            "FAILED runs in MLflow hold the errors"
        )
        return EXIT_FAILED
    return EXIT_OK if analysed else EXIT_FAILED


def _print_mlflow_hint(loc: Locations, outcome: Outcome) -> None:
    runs, run = outcome.urls(loc.tracking_uri)
    if not loc.tracking_uri.startswith("http"):
        print(f"MLflow: `headsweep ui --root {loc.root}`, then")
    print(f"MLflow runs: {runs}\nMLflow parent run: {run}")


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
    from sweeps.status import list_sweeps  # the store, read-only

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
    from sweeps.status import sweep_status  # the store, read-only

    check_name(args.name, "NAME")
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
    if st["state"] == "crashed":
        print(f"  its driver is gone: continue with `headsweep resume {st['name']}`")
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    loc = _locations(args)
    if loc.tracking_uri.startswith("http"):
        print(f"MLflow server: {loc.tracking_uri}")
        return EXIT_OK
    from sweeps.ui import serve  # the server runs in its own process

    loc.check_writable()  # MLflow's server creates the store on first start
    return serve(loc, args.host, args.port)


def cmd_analyze(args: argparse.Namespace) -> int:
    check_name(args.name, "NAME")
    loc = _locations(args, write=True)
    from sweeps.status import find_parent  # read-only: a missing sweep creates no store

    find_parent(args.name, loc)
    from sweeps.results import analyze_sweep  # the analysis stack

    summary = analyze_sweep(args.name, loc)
    print(summary.terminal_table())
    print(f"tables and figures: {summary.directory}")
    return EXIT_FAILED if summary.unreadable else EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from sweeps.compare import compare_sweeps  # tables and pandas; torch only to analyse

    for name in args.names:
        check_name(name, "NAME")
    print(compare_sweeps(args.names[0], args.names[1], _locations(args)))
    return EXIT_OK


def cmd_reproduce(args: argparse.Namespace) -> int:
    from sweeps.reproduce_plan import parse_only, plan  # the specs: torch, not Ray

    only = parse_only(args.only)
    if args.seeds is not None and args.seeds < 1:
        raise SpecError(f"--seeds {args.seeds}: need at least 1")
    everything, skipped = plan(None, args.seeds, Path.cwd())
    steps = [b for b in everything if only is None or set(b.step.trends) & only]
    if args.no_anchors:
        steps = [b for b in steps if not b.step.anchor_of]
    if args.dry_run:
        from sweeps.reproduce import print_plan

        loc = Locations.make(args.root, args.tracking_uri, args.storage)  # nothing created
        print_plan(steps, skipped, loc)
        return EXIT_OK
    from sweeps.reproduce import check_report, report_only, reproduce

    report = check_report(Path(args.report))
    if args.report_only:  # reads the stored sweeps: creates no store
        loc = Locations.make(args.root, args.tracking_uri, args.storage)
        return report_only(everything, skipped, loc, report)
    return reproduce(steps, everything, skipped, _locations(args, write=True, driver=True), report)


def cmd_validate(args: argparse.Namespace) -> int:
    from sweeps.cluster import validate_cluster  # Ray's autoscaler schema

    problems = validate_cluster(args.cluster)
    if problems:
        for problem in problems:
            print(f"{args.cluster}: {problem}", file=sys.stderr)
        return EXIT_INPUT
    print(f"{args.cluster}: valid Ray cluster config")
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "resume": cmd_resume,
    "list": cmd_list,
    "status": cmd_status,
    "ui": cmd_ui,
    "trial": cmd_trial,
    "calibrate": cmd_calibrate,
    "analyze": cmd_analyze,
    "compare": cmd_compare,
    "reproduce": cmd_reproduce,
    "validate": cmd_validate,
}


def _os_error(exc: OSError) -> str:
    """An OSError as one line that names its path (`[Errno 2] No such file or directory` alone
    does not say which file)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def main(argv: list[str] | None = None) -> int:
    args = parser(COMMANDS).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow sets its level on import
    # No third-party progress bars in a sweep's output (MLflow's "Downloading artifacts") but
    # with -v; a user's own setting wins.
    bars = "true" if args.verbose else "false"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", bars)
    try:
        return int(args.fn(args))
    except (SpecError, SweepError, ConnectionError) as exc:
        return _fail(str(exc))
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        return _fail(_os_error(exc))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an environment problem: short unless asked
        lost = tracking_failure(exc)
        if lost and not args.verbose:  # the server answered /health, then stopped answering
            uri = getattr(args, "tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI")
            return _fail(f"MLflow tracking server {uri or ''} stopped answering: {lost}")
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else " (run with -v for the traceback)"
        return _fail(f"{type(exc).__name__}: {exc}{hint}", EXIT_FAILED)


def entry() -> None:
    """The `headsweep` program (pyproject's console script, and `python -m sweeps.cli`):
    `main`, then what a normal exit does before it tears the interpreter down (the atexit
    handlers: Ray's shutdown, logging's and MLflow's flushes, pending finalizers; the output
    flushed), without that teardown module by module, which takes seconds with torch, Ray,
    MLflow and matplotlib loaded (1.1 s for torch alone, 3.7 s for a sweep's modules, measured
    on a busy 2-core machine) and would only hold up the end of every sweep: whatever the
    commands write is written and closed by then. While a non-daemon thread is still alive
    (none of headsweep's own), the normal exit instead, which waits for it."""
    try:
        code = main()
    except SystemExit as exc:  # argparse's usage errors
        if not isinstance(exc.code, int | None):
            raise
        code = exc.code or 0
    alive = [t for t in threading.enumerate() if t is not threading.current_thread()]
    if any(not t.daemon for t in alive):
        raise SystemExit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
