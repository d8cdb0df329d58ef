"""Trial records for sweeps stored before trainables wrote them (no `record.json` in the final
checkpoint): rebuilt from the final Tune report, as the analysis of that time read it (probe
rows from the probe metrics, the protocol from the probe config keys, dims from `dim/<tap>`).
Only `sweeps.results.collect` uses this; new sweeps never need it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from headsweep import metrics as M
from headsweep.config import ProbeConfig
from headsweep.configtree import build, unflatten
from headsweep.probes import protocol_name
from headsweep.record import ProbeRow, TrialRecord


def _protocol(config: Mapping[str, Any]) -> str:
    """The probe protocol from a trial's flat config, as the analysis of the time derived it."""
    probe = {k.removeprefix("probe."): v for k, v in config.items() if k.startswith("probe.")}
    try:
        return protocol_name(build(ProbeConfig, unflatten(probe)))
    except (ValueError, TypeError):
        return str(config.get("probe_penalty", "ridge"))  # the synthetic probe


def record_from_report(
    trainable: str,
    config: Mapping[str, Any],
    final: Mapping[str, Any],
    reported: list[dict[str, Any]],
) -> TrialRecord:
    """A record of a finished trial from its flat resolved config, its final report and the
    reports before it (its per-epoch history)."""
    metrics: dict[str, float] = {}
    timings: dict[str, float] = {}
    resources: dict[str, float] = {}
    dims: dict[str, int] = {}
    accuracy: dict[tuple[str, str], float] = {}
    for key, value in final.items():
        parsed = M.parse(key)
        if parsed is None or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if parsed.kind == "dim":
            dims[parsed.tap] = int(value)
        elif parsed.kind == "time":
            timings[parsed.stat] = float(value)
        elif parsed.kind == "resources":
            resources[parsed.stat] = float(value)
        elif parsed.family.column:
            metrics[key] = float(value)
            if parsed.kind == "probe" and parsed.tap != "gap":
                accuracy[(parsed.target, parsed.tap)] = float(value)
    # Tap order: as the dims were reported (pre first, post last), else as the probes were.
    taps = list(dims) or list(dict.fromkeys(tap for _, tap in accuracy))
    targets = list(dict.fromkeys(target for target, _ in accuracy))
    protocol = _protocol(config)
    probes = [
        ProbeRow(tap, target, accuracy[(target, tap)], protocol, dims.get(tap), 0, 0)
        for target in targets
        for tap in taps
        if (target, tap) in accuracy
    ]
    return TrialRecord(
        trainable=trainable,
        config=unflatten(config),
        metrics=metrics,
        probes=probes,
        history=reported,
        timings=timings,
        device="unknown",
        steps=int(metrics.get(M.STEPS, 0)),
        resources=resources,
        node_id=str(final.get(M.NODE_ID, "")),
    )
