"""`report.html`: a sweep's answer in one self-contained page for MLflow's artifact viewer.

MLflow shows an .html artifact in a sandboxed iframe that cannot fetch sibling artifacts, so
everything is inline: the headline, the trend verdict lines, the gap table with its 95%
intervals, the across-trials correlations of [O]'s bounds (when the sweep logged them), and the
figures as base64 PNG data URIs. Built from the `Summary` of `analysis.report.analyze`; no
timestamp inside, so an unchanged analysis rewrites nothing. Pure: no torch, no MLflow.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

import pandas as pd

from analysis.bounds import SWEEP
from analysis.report import Summary, _ci, _pm, _short, _value
from headsweep.atomic import write_if_changed

REPORT_HTML = "report.html"
MAX_FIGURES = 40  # a 2 x 3 x 4 sweep already has ~20; beyond this the page gets unwieldy
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
li { font-family: ui-monospace, monospace; font-size: 0.9em; margin: 0.2em 0; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.8em; color: #666; }
"""


def _bold(markdown: str) -> str:
    """The headline's **bold** as <strong>, everything else escaped."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(markdown))


def _table(header: list[str], rows: list[list[str]], text_columns: int) -> str:
    """An HTML table; the first `text_columns` columns are left-aligned labels."""

    def cell(i: int, value: str) -> str:
        kind = ' class="text"' if i < text_columns else ""
        return f"<td{kind}>{html.escape(value)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>\n" for row in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def gap_table(summary: Summary) -> str:
    """The gap table, cell for cell as in summary.md."""
    header = [*(_short(k) for k in summary.settings), "target", "n", "pre", "post", "gap"]
    rows = [
        [
            *(_value(r[k]) for k in summary.settings),
            str(r["target"]),
            str(r["n"]),
            _pm(r["pre_mean"], r["pre_std"]),
            _pm(r["post_mean"], r["post_std"]),
            _pm(r["gap_mean"], r["gap_std"], signed=True),
            _ci(r),
        ]
        for _, r in summary.gaps.iterrows()
    ]
    return _table([*header, "95% CI"], rows, len(summary.settings) + 1)


def bounds_section(directory: Path) -> str:
    """The sweep rows of bounds.parquet (empty when the trials logged no bounds)."""
    path = directory / "bounds.parquet"
    if not path.exists():
        return ""
    bounds = pd.read_parquet(path)
    across = bounds[bounds["scope"] == SWEEP]
    if across.empty:
        return ""

    def number(value: float, signed: bool = True) -> str:
        return "-" if not math.isfinite(value) else (f"{value:+.2f}" if signed else f"{value:g}")

    rows = [
        [
            str(r["target"]),
            str(r["bound"]),
            str(r["accuracy"]),
            str(r["n"]),
            number(r["rho"]),
            f"[{number(r['ci_low'])}, {number(r['ci_high'])}]"
            if math.isfinite(r["ci_low"])
            else "n < 4",
        ]
        for _, r in across.iterrows()
    ]
    table = _table(["target", "bound", "accuracy", "n", "Spearman ρ", "95% CI (Fisher z)"], rows, 3)
    return (
        "<h2>[O]'s MI bounds vs accuracy, across trials</h2>\n"
        "<p>Rank correlation of each trial's final bound with its final probe accuracy; "
        "per-trial correlations across epochs are in bounds.parquet.</p>\n" + table
    )


def figures_section(paths: list[Path]) -> str:
    parts = []
    for path in paths[:MAX_FIGURES]:
        if not path.exists():
            continue
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        name = html.escape(path.name)
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{name}">'
            f"<figcaption>{name}</figcaption></figure>"
        )
    more = len(paths) - MAX_FIGURES
    if more > 0:
        parts.append(f"<p>{more} more figure(s) in analysis/figures.</p>")
    return "<h2>Figures</h2>\n" + "\n".join(parts) if parts else ""


def render(summary: Summary) -> str:
    """The page as text (see the module docstring)."""
    title = html.escape(f"{summary.sweep}: pre- vs post-projection probe accuracy")
    lines = [x for x in (summary.unreadable_line(), summary.health_line()) if x]
    lines += [summary.calibration.line()] if summary.calibration else []
    lines += [v.line() for v in summary.verdicts]
    verdicts = (
        "<h2>Verdicts</h2>\n<ul>\n"
        + "".join(f"<li>{html.escape(line)}</li>\n" for line in lines)
        + "</ul>"
        if lines
        else ""
    )
    headline = summary.headline()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        f"<p>{_bold(headline)}</p>" if headline else "",
        f"<p>{html.escape(summary.message)}. Gap = pre − post, mean over seeds ± std, with a "
        "paired 95% t-interval.</p>",
        verdicts,
        "<h2>Gap table</h2>\n" + gap_table(summary) if not summary.gaps.empty else "",
        bounds_section(summary.directory),
        figures_section(summary.figures),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def write_report(summary: Summary) -> Path:
    """report.html beside summary.md, rewritten only when its content changed."""
    path = summary.directory / REPORT_HTML
    write_if_changed(path, render(summary).encode())
    return path
