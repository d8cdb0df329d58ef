"""A sweep's state from the tracking store alone (no Ray, no torch): `headsweep status` and
`headsweep list`."""

from __future__ import annotations

import time
from typing import Any

from headsweep import metrics as M
from sweeps.locations import Locations, SweepError


def sweep_status(name: str, loc: Locations) -> dict[str, Any]:
    """A sweep's state from the tracking store alone (no Ray): counts, best metric, duration."""
    tracker = loc.tracker()
    parent = tracker.find_sweep(name)
    if parent is None:
        raise SweepError(f"no sweep named {name!r} in {loc.tracking_uri} (see `headsweep list`)")
    tags = parent.data.tags
    children = tracker.children(parent)
    counts: dict[str, int] = {}
    for child in children:
        counts[child.info.status] = counts.get(child.info.status, 0) + 1
    metric, mode = tags.get("headsweep.metric", ""), tags.get("headsweep.mode", "max")
    scored = [c for c in children if metric in c.data.metrics]
    best = None
    if scored:
        pick = max if mode == "max" else min
        top = pick(scored, key=lambda c: c.data.metrics[metric])
        partner = M.partner(metric)
        best = {
            "run": top.info.run_name,
            "metric": metric,
            "value": top.data.metrics[metric],
            "post": top.data.metrics.get(partner),
        }
    end = parent.info.end_time or int(time.time() * 1000)
    return {
        "name": name,
        "experiment": tracker.client.get_experiment(parent.info.experiment_id).name,
        "state": tags.get("headsweep.state", parent.info.status.lower()),
        "trials": int(tags.get("headsweep.num_trials", len(children))),
        "runs": counts,
        "best": best,
        "duration_s": (end - parent.info.start_time) / 1000,
        "parent_run_id": parent.info.run_id,
        "storage": tags.get("headsweep.storage", ""),
    }


def list_sweeps(loc: Locations) -> list[dict[str, Any]]:
    tracker = loc.tracker()
    rows = []
    for parent in tracker.sweeps():
        tags = parent.data.tags
        rows.append(
            {
                "name": tags.get("headsweep.sweep", parent.info.run_name),
                "state": tags.get("headsweep.state", parent.info.status.lower()),
                "trials": tags.get("headsweep.num_trials", "?"),
                "started": time.strftime(
                    "%Y-%m-%d %H:%M", time.localtime(parent.info.start_time / 1000)
                ),
            }
        )
    return rows
