"""One slow test per trend family: the shipped CPU profiles, run the way `headsweep reproduce`
runs them, must give the verdicts REPRODUCTION.md documents (docs/science.md §10).

Each test runs `headsweep reproduce --only <the family's trends> --no-anchors` into a fresh
root (real Ray Tune, real MLflow, the specs' own seeds and grids), then reads the verdict table
of the report it wrote and compares it, trend by trend, with the committed REPRODUCTION.md's
generated table. A documented *failed* or *inconclusive* verdict is asserted as such: a run
that turns it into *held* fails this test as surely as the reverse. A trend REPRODUCTION.md has
no verdict for (the block not generated yet) fails with that message, never passes.

Hours on 2 cores (`pytest -m slow`; the synthetic family ~5 min, the image families 20-40 min
each). HEADSWEEP_REPRODUCE_ROOT=<root> runs them against an existing reproduction root
instead (its finished sweeps are skipped, only the report is recomputed): a check that the
committed table is what the stored sweeps give, in seconds, not a re-run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from analysis.reproduction import BEGIN, END
from sweeps import cli

REPO = Path(__file__).resolve().parents[1]
FAMILIES = {
    "synthetic": "T1,T2,T3,T4,T5,E5",
    "xue_digits": "T6,T7",
    "xue_reweight": "T8",
    "xue_coarse_fine": "T9",
    "ouyang_bottleneck": "T10,T11,T12",
}
ROW = re.compile(r"^\| (T\d+|E\d+) \| `([^`]+)` \| ([^|]+) \|")


def verdict_table(report: Path) -> dict[tuple[str, str], str]:
    """(trend, sweep) -> the outcome cell of the generated block's verdict table."""
    text = report.read_text()
    block = text[text.index(BEGIN) : text.index(END)]
    section = block.split("### Verdicts", 1)[1].split("\n### ", 1)[0]
    rows = (ROW.match(line) for line in section.splitlines())
    return {(m[1], m[2]): m[3].strip().strip("*") for m in rows if m}


def documented(trends: set[str]) -> dict[tuple[str, str], str]:
    table = {k: v for k, v in verdict_table(REPO / "REPRODUCTION.md").items() if k[0] in trends}
    missing = sorted(k for k, v in table.items() if v not in ("held", "failed", "inconclusive"))
    assert table and not missing, (
        f"REPRODUCTION.md documents no verdict for {missing or sorted(trends)}: run "
        "`headsweep reproduce` and commit its report first"
    )
    return table


def test_verdict_table_parser_reads_the_outcomes(tmp_path):
    """Fast: the parser the slow tests rely on, on a block in the generated format."""
    report = tmp_path / "R.md"
    report.write_text(
        f"# R\n{BEGIN}\n## x\n\n### Verdicts\n\n| trend | sweep | verdict | e | s | a |\n"
        "|---|---|---|---|---|---|\n| T6 | `xue_digits_cpu` | **held** | gap | 3 | no anchor |\n"
        "| E5 | `syn` | **inconclusive** | – | 3 | x |\n| T9 | `cf` | not run yet | – | – | – |"
        f"\n\n### Anchors\n\n| T6 | `xue_digits_cpu_anchor` | **failed** | x | y |\n{END}\n"
    )
    assert verdict_table(report) == {
        ("T6", "xue_digits_cpu"): "held",
        ("E5", "syn"): "inconclusive",
        ("T9", "cf"): "not run yet",
    }


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(4 * 3600)
@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_profile_gives_the_documented_verdicts(family, ray_session, tmp_path):
    trends = set(FAMILIES[family].split(","))
    expected = documented(trends)
    root = os.environ.get("HEADSWEEP_REPRODUCE_ROOT") or str(tmp_path / "runs")
    report = tmp_path / "REPRODUCTION.md"
    argv = ["reproduce", "--only", FAMILIES[family], "--no-anchors", "--root", root]
    assert cli.main([*argv, "--report", str(report)]) == 0
    measured = {k: v for k, v in verdict_table(report).items() if k in expected}
    print("\n".join(f"{t} {s}: {v}" for (t, s), v in sorted(measured.items())))
    assert measured == expected
