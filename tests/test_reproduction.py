"""`headsweep reproduce`: the plan, its resume logic (driver functions replaced: no training),
and the generated report block, pinned against the committed REPRODUCTION.md so the report
cannot drift from the code.

The fixture (tests/fixtures/reproduction/) holds the real stored sweeps of the reproduction
behind REPRODUCTION.md (root /work/runs15, 2026-11-29/30), copied by
tests/fixtures/reproduction/build.py: each sweep's probes.parquet and bounds.parquet as
`headsweep analyze` wrote them, its trials.parquet cut to the columns the report reads, and the
record `headsweep reproduce` wrote (calibration, seconds, figures). build.py refuses unless the
cut renders the same block as the root. After an intended change to the block, run
`headsweep reproduce --report-only --root <root>` and rebuild the fixture from the same root.
tests/fixtures/one_seed/ holds a one-seed quickstart sweep standing in for an anchor.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import sweeps.reproduce as R
from analysis.reproduction import (
    BEGIN,
    END,
    PLACEHOLDER,
    StepView,
    load_result,
    render_block,
    splice,
    write_report,
)
from sweeps import gpu_cost
from sweeps.cli import main
from sweeps.locations import Locations, SweepError
from sweeps.overrides import SpecError
from sweeps.reproduce_plan import PLAN, parse_only, plan, views

FIXTURE = Path(__file__).parent / "fixtures" / "reproduction"
ONE_SEED = Path(__file__).parent / "fixtures" / "one_seed"
COMMITTED = Path(__file__).parents[1] / "REPRODUCTION.md"


@pytest.fixture(scope="module")
def default_plan():
    return plan(None, None, Path.cwd())


def _block(default_plan) -> str:
    built, skipped = default_plan
    results = [load_result(view, FIXTURE) for view in views(built)]
    return render_block(results, "headsweep reproduce --profile cpu", skipped, gpu_cost.table())


# --------------------------------------------------------------------------- the report


def test_the_committed_report_is_what_the_checks_compute_from_the_stored_sweeps(default_plan):
    expected = splice(COMMITTED.read_text(), _block(default_plan))
    assert COMMITTED.read_text() == expected, (
        "the report block computed from the fixture differs from REPRODUCTION.md's: regenerate "
        "both from the same root (`headsweep reproduce --report-only --root R`, then "
        "tests/fixtures/reproduction/build.py R) if the change is meant"
    )


def test_block_carries_the_stored_verdicts(default_plan):
    block = _block(default_plan)
    assert "| T6 | `xue_digits_cpu` | **held** | mlp digit gap p=0: +7.6 pts [+5.0, +10.2]" in block
    assert "| T8 | `xue_reweight_cpu` | **failed** |" in block
    assert "| E5 | `xue_synthetic_linear` | **inconclusive** |" in block  # straddles 0
    assert "| T9 | `xue_coarse_fine_cpu` | **held** |" in block
    assert "| `xue_digits_cpu_anchor` | calibration: FAIL (" in block  # calibrated, not yet run
    assert "edf06a5" in block and "dda2df6" in block  # the runs' revisions
    assert "docs/figures/reproduction/xue_digits_cpu/digit_vs_aug_p_drop.png" in block
    assert "`xue_digits_strength_cpu`: sweeps/xue_digits.yaml has no `cpu_strength`" in block


def test_regenerating_twice_gives_identical_bytes(tmp_path, default_plan):
    report = tmp_path / "REPRODUCTION.md"
    shutil.copyfile(COMMITTED, report)
    block = _block(default_plan)
    assert write_report(report, block) is False  # already current: not even rewritten
    first = report.read_bytes()
    assert write_report(report, _block(default_plan)) is False
    assert report.read_bytes() == first == COMMITTED.read_bytes()


def test_splice_inserts_markers_at_the_top_of_the_results_and_keeps_the_rest():
    text = "# Report\n\nintro\n\n## Results A\n\nhand-written\n"
    once = splice(text, "generated\n")
    assert (
        once == f"# Report\n\nintro\n\n{BEGIN}\ngenerated\n{END}\n\n## Results A\n\nhand-written\n"
    )
    again = splice(once, "new\n")
    assert again == once.replace("generated", "new")
    with pytest.raises(ValueError, match="without the other"):
        splice(f"x\n{BEGIN}\n", "y\n")


def test_the_real_report_has_the_markers():
    text = (Path(__file__).parents[1] / "REPRODUCTION.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.index(BEGIN) < text.index(END)
    assert PLACEHOLDER in text or "## Reproduction at CPU scale (generated)" in text


def test_anchor_verdict_beside_the_short_run():
    """A one-seed stored sweep (quickstart_seed1) standing in for an anchor: its verdict is
    inconclusive by the seed rule and shows beside the short run's."""
    short = StepView("xue_digits_cpu", "xue_digits", ("T6",), "xue_digits.yaml", "cmd a")
    long = StepView("quickstart_seed1", "quickstart", ("T6",), "q", "cmd b", "xue_digits_cpu")
    results = [load_result(short, FIXTURE), load_result(long, ONE_SEED)]
    block = render_block(results, "headsweep reproduce")
    row = next(line for line in block.splitlines() if line.startswith("| T6 | `xue_digits_cpu`"))
    assert row.endswith("| 3 | **inconclusive** |")
    assert (
        "| T6 | `quickstart_seed1` | **inconclusive** | mlp digit gap p=0: +8.7 pts (n=1)" in block
    )


# --------------------------------------------------------------------------- the plan


def test_plan_order_anchors_and_not_planned(default_plan):
    built, skipped = default_plan
    names = [b.step.name for b in built]
    assert names[:3] == ["xue_synthetic_linear", "xue_synthetic_relu", "xue_digits_cpu"]
    assert names.index("ouyang_search_cpu") < names.index("xue_digits_cpu_anchor")
    assert [name for name, _ in skipped] == ["xue_digits_strength_cpu"]
    by = {b.step.name: b for b in built}
    anchor = by["xue_reweight_cpu_anchor"].spec
    assert anchor.base["train"]["epochs"] == 32  # 4x the cpu profile's 8
    assert [tuple(a.values) for a in anchor.space if a.key == "train.seed"] == [(0,)]
    variants = next(a.values for a in anchor.space if a.key == "variant")
    assert {v.get("train.epochs") for v in variants} == {None, 0}  # untrained controls stay 0
    short = by["xue_reweight_cpu"].spec
    assert short.num_trials() == 21 and by["xue_digits_cpu"].spec.num_trials() == 18
    assert "train.epochs=32" in by["xue_digits_cpu_anchor"].command
    assert by["xue_digits_cpu"].command.splitlines()[0].startswith("headsweep calibrate")
    assert not by["xue_synthetic_linear"].calibrates


def test_only_selects_the_steps_whose_trends_intersect():
    built, _ = plan(parse_only("t8,T12"), None, Path.cwd())
    assert {b.step.name for b in built} <= {s.name for s in PLAN}
    only = [b for b in built if {"T8", "T12"} & set(b.step.trends)]
    assert [b.step.name for b in only] == [
        "xue_reweight_cpu",
        "ouyang_bottleneck_cpu",
        "ouyang_barlow_cpu",
        "xue_reweight_cpu_anchor",
        "ouyang_bottleneck_cpu_anchor",
        "ouyang_barlow_cpu_anchor",
    ]
    with pytest.raises(SpecError, match="--only: unknown trend T13"):
        parse_only("T6,T13")


def test_seeds_override_renames_and_replaces_the_seed_axis():
    built, _ = plan(None, 2, Path.cwd())
    by = {b.step.name: b for b in built}
    assert by["xue_digits_cpu_seeds2"].seeds == 2
    assert by["xue_synthetic_relu_seeds2"].seeds == 2  # the synthetic axis is `seed`
    assert by["xue_digits_cpu_anchor"].seeds == 1
    assert by["xue_digits_cpu_anchor"].step.anchor_of == "xue_digits_cpu_seeds2"
    assert by["ouyang_search_cpu"].seeds == 0  # a search: no seed axis to replace
    same, _ = plan(None, 3, Path.cwd())  # the specs' own count: the default names
    assert "xue_digits_cpu" in {b.step.name for b in same}


# --------------------------------------------------------------------------- the command


def test_dry_run_writes_nothing(tmp_path, capsys):
    root, report = tmp_path / "root", tmp_path / "R.md"
    code = main(
        ["reproduce", "--dry-run", "--only", "T5", "--root", str(root), "--report", str(report)]
    )
    out = capsys.readouterr().out
    assert code == 0 and list(tmp_path.iterdir()) == []
    assert "[1/1] xue_synthetic_relu (T5): 10 trials, 5 seed(s)" in out
    assert "nothing written" in out


def test_no_anchors_leaves_out_the_long_runs(tmp_path, capsys):
    root, report = tmp_path / "root", tmp_path / "R.md"
    argv = ["reproduce", "--dry-run", "--only", "T6", "--root", str(root), "--report", str(report)]
    assert main(argv) == 0
    assert "xue_digits_cpu_anchor" in capsys.readouterr().out
    assert main([*argv, "--no-anchors"]) == 0
    out = capsys.readouterr().out
    assert "[1/1] xue_digits_cpu (T6)" in out and "xue_digits_cpu_anchor" not in out


@pytest.mark.parametrize("argv", [["--only", "T0"], ["--seeds", "0"], ["--profile", "gpu"]])
def test_bad_options_exit_2_naming_them(argv, capsys):
    try:
        code = main(["reproduce", "--dry-run", *argv])
    except SystemExit as exc:  # argparse's own refusals (an unknown --profile)
        code = exc.code
    assert code == 2
    assert argv[0] in capsys.readouterr().err


class FakeDriver:
    """Stands in for the driver, the analysis and the calibration; records what ran."""

    def __init__(self, states: dict[str, str], interrupt: str = "") -> None:
        self.states, self.interrupt, self.calls = states, interrupt, []

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(R, "sweep_state", lambda name, loc: (self.states[name], 60.0, "d"))
        monkeypatch.setattr(R, "run_sweep", lambda built, loc: self._ran("run", built.step.name))
        monkeypatch.setattr(R, "resume_sweep", lambda name, loc: self._ran("resume", name))
        monkeypatch.setattr(R, "analyze", lambda name, loc: self.calls.append(("analyze", name)))
        monkeypatch.setattr(R, "calibrate", self._calibrate)

    def _ran(self, what: str, name: str):
        self.calls.append((what, name))
        self.states[name] = "finished"
        return SimpleNamespace(interrupted=name == self.interrupt, failed=0)

    def _calibrate(self, built, echo):
        self.calls.append(("calibrate", built.step.name))
        return True, "calibration: PASS (fake)"


def test_finished_skipped_crashed_resumed_missing_run(tmp_path, monkeypatch, default_plan):
    built = {b.step.name: b for b in default_plan[0]}
    steps = [built[n] for n in ("xue_synthetic_linear", "xue_synthetic_relu", "xue_digits_cpu")]
    steps.append(built["xue_reweight_cpu"])
    fake = FakeDriver(
        {
            "xue_synthetic_linear": "finished",
            "xue_synthetic_relu": "crashed",
            "xue_digits_cpu": "interrupted",
            "xue_reweight_cpu": "missing",
        }
    )
    fake.install(monkeypatch)
    loc, report = Locations.make(tmp_path / "runs"), tmp_path / "REPRODUCTION.md"
    assert R.reproduce(steps, steps, [], loc, report) == 0
    ran = [c for c in fake.calls if c[0] != "analyze"]
    assert ran == [
        ("resume", "xue_synthetic_relu"),
        ("calibrate", "xue_digits_cpu"),
        ("resume", "xue_digits_cpu"),
        ("calibrate", "xue_reweight_cpu"),
        ("run", "xue_reweight_cpu"),
    ]
    assert "calibration: PASS (fake)" in report.read_text()
    # Run again: everything is finished and calibrated, so nothing trains.
    fake.calls.clear()
    assert R.reproduce(steps, steps, [], loc, report) == 0
    assert [c for c in fake.calls if c[0] != "analyze"] == []


def test_interrupted_step_stops_the_command_with_130(tmp_path, monkeypatch, default_plan):
    built = {b.step.name: b for b in default_plan[0]}
    steps = [built["xue_synthetic_linear"], built["xue_synthetic_relu"]]
    fake = FakeDriver({s.step.name: "missing" for s in steps}, interrupt="xue_synthetic_linear")
    fake.install(monkeypatch)
    report = tmp_path / "REPRODUCTION.md"
    assert R.reproduce(steps, steps, [], Locations.make(tmp_path / "runs"), report) == 130
    assert ("run", "xue_synthetic_relu") not in fake.calls
    assert BEGIN in report.read_text()


def test_a_sweep_running_under_another_driver_is_refused():
    with pytest.raises(SweepError, match="running under another driver"):
        R.action("running")


def test_report_only_writes_the_block_from_the_stored_sweeps_and_runs_nothing(
    tmp_path, monkeypatch, capsys, default_plan
):
    """--report-only: the block the stored tables give, figures copied beside the report, and
    nothing run, calibrated or created (no tracking store); a second time changes no byte."""
    fake = FakeDriver({})  # any state lookup, run, resume, analysis or calibration fails it
    fake.install(monkeypatch)
    root = tmp_path / "runs"
    for sweep in (p for p in FIXTURE.iterdir() if p.is_dir()):
        shutil.copytree(sweep, root / "tables" / sweep.name)
    figures = root / "tables" / "xue_digits_cpu" / "figures"
    figures.mkdir()
    (figures / "digit_vs_aug_p_drop.png").write_bytes(b"png")
    (figures / "object_vs_aug_p_drop.png").write_bytes(b"png")  # not the judged target
    report = tmp_path / "out" / "REPRODUCTION.md"
    report.parent.mkdir()
    report.write_text("# Reproduction report\n\nprose\n")
    copied = report.parent / "docs/figures/reproduction/xue_digits_cpu"
    copied.mkdir(parents=True)
    (copied / "bounds_object.png").write_bytes(b"old")  # an interrupted run's, no longer made
    argv = ["reproduce", "--report-only", "--root", str(root), "--report", str(report)]
    assert main(argv) == 0
    assert "rewritten" in capsys.readouterr().out
    assert fake.calls == [] and not (root / "mlflow.db").exists()
    assert sorted(p.name for p in copied.iterdir()) == ["digit_vs_aug_p_drop.png"]
    record = R.Record.read(root / "tables" / "xue_digits_cpu")
    assert record.figures == ("docs/figures/reproduction/xue_digits_cpu/digit_vs_aug_p_drop.png",)
    built, skipped = default_plan
    loc = Locations.make(root)
    results = [load_result(view, loc.root / "tables") for view in views(built)]
    block = render_block(results, "headsweep reproduce --profile cpu", skipped, gpu_cost.table())
    assert report.read_text() == splice("# Reproduction report\n\nprose\n", block)
    assert "digit_vs_aug_p_drop.png" in block
    first = report.read_bytes()
    assert main(argv) == 0
    assert "unchanged" in capsys.readouterr().out and report.read_bytes() == first


def test_report_only_refuses_a_root_without_stored_sweeps(tmp_path, capsys):
    report = tmp_path / "REPRODUCTION.md"
    report.write_text("# kept\n")
    empty = tmp_path / "empty"
    argv = ["reproduce", "--report-only", "--root", str(empty), "--report", str(report)]
    assert main(argv) == 2
    assert "no stored sweep of the plan" in capsys.readouterr().err
    assert report.read_text() == "# kept\n" and not empty.exists()
