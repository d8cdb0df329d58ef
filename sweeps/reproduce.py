"""`headsweep reproduce`: the whole CPU-scale reproduction in one command, resumable.

Each step of `sweeps.reproduce_plan.PLAN` in order: the calibration control first where the
spec has one (`sweeps.calibrate`, recorded once), then the sweep itself: finished (or finished
with failed trials) is skipped, interrupted or crashed is resumed (`driver.resume`), missing is
run (`driver.run`); then `headsweep analyze`'s tables and figures, the figures copied beside the
report, the step's record, and the report's generated block rewritten from every stored sweep
(`analysis.reproduction`). Killing the command and running it again continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.paired import main_target
from analysis.reproduction import RECORD, Record, load_result, render_block, write_report
from headsweep.atomic import write_if_changed
from sweeps import gpu_cost
from sweeps.locations import Locations, SweepError
from sweeps.reproduce_plan import Built, hours, views
from sweeps.status import find_parent, state_of

if TYPE_CHECKING:
    from sweeps.driver import Outcome

MISSING, FINISHED, FAILED = "missing", "finished", "failed"
RESUMABLE = ("interrupted", "crashed")
FIGURES = Path("docs/figures/reproduction")  # beside the report
EXIT_INTERRUPTED = 130


# The Ray/torch side, loaded only when a step runs (tests replace these four).
def run_sweep(spec: Built, loc: Locations) -> Outcome:
    from sweeps import driver

    return driver.run(spec.spec, spec.step.name, loc)


def resume_sweep(name: str, loc: Locations) -> Outcome:
    from sweeps import driver

    return driver.resume(name, loc)


def analyze(name: str, loc: Locations) -> str:
    """`headsweep analyze NAME`; returns its verdict lines."""
    from sweeps.results import analyze_sweep

    return analyze_sweep(name, loc).verdict_text()


def calibrate(built: Built, echo: Callable[[str], None]) -> tuple[bool | None, str]:
    from sweeps.calibrate import run_calibration

    result = run_calibration(built.spec, 1, echo)
    return result.ok, result.line()


def sweep_state(name: str, loc: Locations) -> tuple[str, float | None, str]:
    """(state, the parent run's duration in seconds, its UTC start date); state "missing"
    when the store has no such sweep. Read-only: a missing store stays missing."""
    try:
        parent = find_parent(name, loc)
    except SweepError:
        return MISSING, None, ""
    seconds = (parent.end_time - parent.start_time) / 1000 if parent.end_time else None
    started = time.strftime("%Y-%m-%d", time.gmtime(parent.start_time / 1000))
    return state_of(parent, name), seconds, started


def action(state: str) -> str:
    if state == MISSING:
        return "run"
    if state in RESUMABLE:
        return "resume"
    if state in (FINISHED, FAILED):
        return f"skip ({state})"
    raise SweepError(
        f"sweep is {state} under another driver; wait for it or stop it, then run "
        "`headsweep reproduce` again"
    )


# --------------------------------------------------------------------------- time


def remaining_s(steps: Sequence[Built], done: Sequence[Built], loc: Locations) -> float:
    """The priors of `steps`, scaled by measured/prior over the finished steps of this root
    that recorded their wall time (1 when none did)."""
    measured = prior = 0.0
    for b in done:
        seconds = Record.read(loc.tables(b.step.name)).seconds
        if seconds:
            measured, prior = measured + seconds, prior + b.estimate_s()
    scale = measured / prior if prior else 1.0
    return scale * sum(b.estimate_s() for b in steps)


def print_plan(built: Sequence[Built], skipped: Sequence[tuple[str, str]], loc: Locations) -> None:
    """`--dry-run`: each step's name, command, trials, estimate and what a run would do."""
    total = 0.0
    print(f"headsweep reproduce: {len(built)} step(s), root {loc.root}")
    for i, b in enumerate(built, 1):
        state = sweep_state(b.step.name, loc)[0]
        total += b.estimate_s()
        trends = ",".join(b.step.trends) or "no trend"
        control = "train the calibration control, then " if b.calibrates else ""
        print(
            f"[{i}/{len(built)}] {b.step.name} ({trends}): {b.spec.num_trials()} trials, "
            f"{f'{b.seeds} seed(s)' if b.seeds else 'no seed axis'}, "
            f"~{hours(b.estimate_s())}; {state}: "
            f"would {control}{action(state)}"
        )
        print("".join(f"      {line}\n" for line in b.command.splitlines()), end="")
    for name, reason in skipped:
        print(f"not planned: {name}: {reason}")
    left = remaining_s(_pending(built, loc), built, loc)
    print(
        f"estimated {hours(total)} in all (priors: sweeps/reproduce_plan.py); ~{hours(left)} "
        "left once the finished steps are discounted and the priors scaled by their measured "
        "time\n(dry run: nothing started, nothing written)"
    )


def _pending(built: Sequence[Built], loc: Locations) -> list[Built]:
    return [b for b in built if sweep_state(b.step.name, loc)[0] not in (FINISHED, FAILED)]


# --------------------------------------------------------------------------- one step


def copy_figures(name: str, loc: Locations, report_dir: Path) -> tuple[str, ...]:
    """The step's figures of its judged target (and the target-free ones) beside the report;
    returns their paths relative to the report's folder. A figure left there by an earlier
    state of the step (an interrupted sweep's, another target's) is removed: the folder is the
    step's, and the report links exactly what it holds."""
    import pyarrow.parquet as pq

    source = loc.tables(name)
    probes_path = source / "probes.parquet"
    if not probes_path.is_file() or not (source / "figures").is_dir():
        return ()
    probes = pq.read_table(probes_path).to_pandas()
    targets = set(probes["target"]) if len(probes) else set()
    keep = main_target(probes) if targets else ""
    others = {t for t in targets if t != keep}
    copied = []
    for png in sorted((source / "figures").glob("*.png")):
        if any(png.name.startswith((f"{t}_", f"bounds_{t}.")) for t in others):
            continue
        relative = FIGURES / name / png.name
        write_if_changed(report_dir / relative, png.read_bytes())
        copied.append(relative.as_posix())
    for stale in sorted((report_dir / FIGURES / name).glob("*.png")):
        if stale.relative_to(report_dir).as_posix() not in copied:
            stale.unlink()
    return tuple(copied)


def run_step(built: Built, loc: Locations, report_dir: Path) -> Outcome | None:
    """Calibrate (once), then run, resume or skip the sweep; analyse and record it."""
    name = built.step.name
    directory = loc.tables(name)
    record = Record.read(directory)
    state, duration, started = sweep_state(name, loc)
    todo = action(state)
    if built.calibrates and not record.calibration:
        print(f"  calibration control of {name} (seed 0, in-process)")
        ok, line = calibrate(built, lambda text: print(f"  {text}"))
        print(f"  {line}")
        if ok is False:
            print("  warning: the instrument failed calibration: its verdicts are inconclusive")
        record = replace(record, calibration=line, calibration_ok=ok)
        record.write(directory)
    outcome = None
    if todo in ("run", "resume"):
        start = time.monotonic()
        outcome = run_sweep(built, loc) if todo == "run" else resume_sweep(name, loc)
        record = replace(record, seconds=(record.seconds or 0.0) + time.monotonic() - start)
    elif record.seconds is None:
        record = replace(record, seconds=duration)  # a sweep run by hand: its driver's time
    if outcome is not None or not (directory / "probes.parquet").is_file():
        try:
            verdicts = analyze(name, loc)
        except Exception as exc:  # as `headsweep run`: analysis never hides the sweep's outcome
            print(f"  analysis failed: {exc} (retried when `headsweep reproduce` runs again)")
            verdicts = ""
        if verdicts:
            print(verdicts.lstrip("\n"))
    if not record.started:
        record = replace(record, started=started or sweep_state(name, loc)[2])
    record = replace(record, figures=copy_figures(name, loc, report_dir))
    record.write(directory)
    return outcome


def write_block(
    built: Sequence[Built], skipped: Sequence[tuple[str, str]], loc: Locations, report: Path
) -> bool:
    results = [load_result(view, loc.root / "tables") for view in views(built)]
    block = render_block(results, "headsweep reproduce --profile cpu", skipped, gpu_cost.table())
    return write_report(report, block)


def reproduce(
    run: Sequence[Built],
    everything: Sequence[Built],
    skipped: Sequence[tuple[str, str]],
    loc: Locations,
    report: Path,
) -> int:
    """Run the steps of `run` in order; the report shows `everything` the plan holds."""
    began = time.monotonic()
    for i, built in enumerate(run, 1):
        state = sweep_state(built.step.name, loc)[0]
        left = remaining_s(_pending(run[i - 1 :], loc), run[: i - 1], loc)
        print(
            f"\n[{i}/{len(run)}] {built.step.name}: {action(state)} "
            f"({built.spec.num_trials()} trials) · elapsed {hours(time.monotonic() - began)} · "
            f"about {hours(left)} left"
        )
        print("".join(f"  {line}\n" for line in built.command.splitlines()), end="")
        outcome = run_step(built, loc, report.parent)
        write_block(everything, skipped, loc, report)
        if outcome is not None and outcome.interrupted:
            print(f"interrupted: run `headsweep reproduce` again to continue ({report} updated)")
            return EXIT_INTERRUPTED
        if outcome is not None and outcome.failed:
            print(f"  {outcome.failed} trial(s) failed: `headsweep status {built.step.name}`")
    write_block(everything, skipped, loc, report)
    print(f"\ndone in {hours(time.monotonic() - began)}; report: {report}")
    return 0


def report_only(
    everything: Sequence[Built],
    skipped: Sequence[tuple[str, str]],
    loc: Locations,
    report: Path,
) -> int:
    """The report's block from the sweeps as stored, running nothing (no Ray, no MLflow, no
    calibration): the figures of every step `headsweep reproduce` has recorded are copied
    beside `report`, whose block is rewritten only if it changed. For a report in another
    folder than the run's (the repository's REPRODUCTION.md from a run's root) and for checking
    that the stored sweeps regenerate the committed report byte for byte."""
    if not any(loc.tables(b.step.name).is_dir() for b in everything):
        # an empty root would rewrite the block as "not run yet" everywhere
        raise SweepError(
            f"no stored sweep of the plan under {loc.root / 'tables'}: nothing to report "
            "(pass the --root the reproduction ran in)"
        )
    for built in everything:
        directory = loc.tables(built.step.name)
        if not (directory / RECORD).is_file() or not (directory / "figures").is_dir():
            continue  # not run by `reproduce` (the block says so), or tables without figures
        figures = copy_figures(built.step.name, loc, report.parent)
        replace(Record.read(directory), figures=figures).write(directory)  # only if changed
    changed = write_block(everything, skipped, loc, report)
    print(f"{report}: {'rewritten' if changed else 'unchanged'} from {loc.root / 'tables'}")
    return 0


def check_report(path: Path) -> Path:
    """--report: a writable file path (its folder exists)."""
    if path.exists() and not path.is_file():
        raise SweepError(f"--report {path}: not a file")
    if not path.parent.is_dir():
        raise SweepError(f"--report {path}: folder {path.parent} does not exist")
    return path


__all__ = ["check_report", "print_plan", "report_only", "reproduce"]
