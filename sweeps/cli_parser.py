"""The `headsweep` command line: options of every command (sweeps.cli runs them).

argparse's own errors are one line too (usage is behind --help), so every refused invocation
reads the same: `headsweep: error: REASON`, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"headsweep: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


class _Version(argparse.Action):
    """argparse's "version" action computes its text up front; the revision needs git (a
    subprocess), so it is read only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        from sweeps.provenance import version_line  # git, only for --version

        print(version_line())
        parser.exit()


VERBOSE = "on an unexpected error, print the full traceback"


def _env_address() -> str | None:
    """The cluster a Ray job's driver belongs to: Ray sets RAY_ADDRESS for the entrypoint of
    `ray job submit`, and a sweep submitted that way must join that cluster as ray.init() would.
    A dashboard URL there (http://...) is for the job CLI, not a cluster address."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    return address if address and not address.startswith(("http://", "https://")) else None


def parser(commands: Mapping[str, Callable[[argparse.Namespace], int]]) -> Parser:
    top = Parser(
        prog="headsweep",
        description="Ray Tune sweeps for projection-head research: pre- "
        "versus post-projection probe accuracy, tracked in MLflow.",
    )
    top.add_argument("-v", "--verbose", action="store_true", help=VERBOSE)
    top.add_argument(
        "--version", action=_Version, nargs=0, help="print the version, git revision and lock"
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(fn=fn)
        p.add_argument(  # also after the command: `headsweep status X -v`
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE
        )
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
            help="shrink every trial (tiny data, one epoch) for a quick check; an explicit "
            "--set of the same key wins",
        )

    p = add("run", commands["run"], "validate a spec and run its sweep on Ray Tune")
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
        help="validate and print the trial list, resources and the resolved base config; "
        "start nothing",
    )
    where(p, storage=True)

    p = add("resume", commands["resume"], "continue an interrupted sweep")
    p.add_argument("name")
    p.add_argument(
        "--address",
        default=_env_address(),
        help="Ray cluster address (default: $RAY_ADDRESS, else start Ray locally)",
    )
    where(p)

    p = add("list", commands["list"], "list stored sweeps (no Ray needed)")
    where(p)
    p = add("status", commands["status"], "counts by state, best metrics and duration of a sweep")
    p.add_argument("name")
    where(p)
    p = add("ui", commands["ui"], "start the MLflow UI on this root's tracking store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    where(p)
    p = add(
        "trial", commands["trial"], "run one trial of a spec in-process, without Ray (debugging)"
    )
    spec_args(p)
    p = add(
        "calibrate",
        commands["calibrate"],
        "train a spec's control (no head, p_drop 0) in-process and check that the instrument "
        "can show its trends (exit 1 if not)",
    )
    spec_args(p)
    p.add_argument("--seeds", type=int, default=1, help="control seeds to train (default: 1)")
    p = add(
        "analyze",
        commands["analyze"],
        "build the Parquet tables and figures of a sweep and log them to its MLflow parent run",
    )
    p.add_argument("name")
    where(p)
    p = add("compare", commands["compare"], "two sweeps' pre/post gap tables side by side")
    p.add_argument("names", nargs=2, metavar="NAME")
    where(p)
    p = add(
        "reproduce",
        commands["reproduce"],
        "run the whole CPU-scale reproduction in order (calibration, sweeps, anchors; run it "
        "again to continue after a kill) and write the report's generated block",
    )
    p.add_argument(
        "--profile",
        default="cpu",
        choices=["cpu"],
        help="the scale the plan runs at (default: cpu, the only one planned)",
    )
    p.add_argument("--only", metavar="TRENDS", help="only the steps judging these, e.g. T6,T8")
    p.add_argument(
        "--no-anchors",
        action="store_true",
        help="skip the anchor runs (4x epochs, 1 seed): the short verdicts only",
    )
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="seeds 0..N-1 on every seed axis (default: what each spec fixes, 3 or 5); the "
        "sweep names then end in _seedsN",
    )
    p.add_argument(
        "--report", default="REPRODUCTION.md", help="the report to update (default: %(default)s)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (steps, commands, trials, estimated time); start and write nothing",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report's block (and copy its figures) from the sweeps stored under "
        "--root as they are; run nothing",
    )
    where(p, storage=True)
    p = add("validate", commands["validate"], "check a Ray cluster launcher YAML offline")
    p.add_argument("cluster", help="e.g. cluster.yaml")
    return top
