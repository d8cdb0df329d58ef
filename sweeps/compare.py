"""`headsweep compare A B`: two sweeps' gap tables side by side, read from their analysis tables.

Both sweeps are looked up read-only first (a missing name creates no store); a sweep that was
never analysed is analysed then (the one case that loads the trainables, and torch with them).
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from sweeps.locations import Locations
from sweeps.status import find_parent


def compare_sweeps(a: str, b: str, loc: Locations) -> str:
    for name in (a, b):
        find_parent(name, loc)
    gaps, settings = [], []
    for name in (a, b):
        path = loc.tables(name) / "gaps.parquet"
        if not path.exists():
            from sweeps.results import analyze_sweep  # loads torch: only for unanalysed sweeps

            analyze_sweep(name, loc)
        table = pq.read_table(path)
        gaps.append(table.to_pandas())
        settings.append(json.loads(table.schema.metadata[b"settings"]))
    from analysis.report import compare_text  # pandas and matplotlib: seconds, loaded last

    return compare_text(a, gaps[0], settings[0], b, gaps[1], settings[1])
