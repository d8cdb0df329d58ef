"""A trial's result as one typed record: what the trainable writes (``record.json`` beside its
final checkpoint, and as an artifact of its MLflow child run) and what the analysis builds its
tables from, so no table is rebuilt by parsing metric strings.

Pure Python (no torch): the driver and the analysis read records without the training stack.
`SCHEMA_VERSION` is written into every record; a reader refuses a version it does not know with
a message saying what to do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from headsweep import metrics as M
from headsweep.configtree import flatten

SCHEMA_VERSION = 1
FILE = "record.json"  # the record's file name inside a checkpoint directory
CONFIG_FILE = "config.json"  # the resolved config beside every checkpoint


class RecordError(ValueError):
    """A record this version cannot read; the message says how to proceed."""


class SchemaMismatch(RecordError):
    """A whole record of another schema version: not damage, another headsweep's record."""


@dataclass(frozen=True)
class ProbeRow:
    """One frozen-feature probe: a tap (pre, a head layer, post) x a label target."""

    tap: str
    target: str
    accuracy: float
    protocol: str  # the exact probe protocol (headsweep.probes.protocol_name)
    dim: int | None  # feature dimension of the tap (None: not recorded, old sweeps only)
    n_train: int
    n_test: int

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ProbeRow:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in raw]
        if missing:
            raise RecordError(f"probe row without {', '.join(missing)}: {dict(raw)!r}")
        return cls(**{n: raw[n] for n in names})


@dataclass(frozen=True)
class FewShotRow:
    """One point of a few-shot curve (headsweep.fewshot): the probe fitted on `shots`
    labelled examples per class (0 = all) of random subset `subset`, scored on the test split."""

    tap: str
    target: str
    shots: int
    subset: int
    accuracy: float

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FewShotRow:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in raw]
        if missing:
            raise RecordError(f"few-shot row without {', '.join(missing)}: {dict(raw)!r}")
        return cls(**{n: raw[n] for n in names})


@dataclass(frozen=True)
class GroupRow:
    """One probe scored over groups (headsweep.groups): a tap x label target x fitting method
    (erm: every training row; dfr: a group-balanced subset), average and worst-group test
    accuracy."""

    tap: str
    target: str
    method: str
    average: float
    worst_group: float
    n_groups: int
    n_train: int

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GroupRow:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in raw]
        if missing:
            raise RecordError(f"group row without {', '.join(missing)}: {dict(raw)!r}")
        return cls(**{n: raw[n] for n in names})


@dataclass
class TrialRecord:
    """Everything one finished trial measured.

    config: the resolved nested config (every default filled in); metrics: the final flat
    metrics the trial itself computed (last epoch, probes and gaps, or the synthetic model's
    measurements); probes: one row per tap x target; history: one dict of metrics per epoch
    (or per progress report); timings: seconds per phase; steps: optimiser steps taken;
    few_shot: one row per tap x target x shots x subset of the few-shot curve; groups: one row
    per tap x target x method of the worst-group evaluation (data with groups)."""

    trainable: str
    config: dict[str, Any]
    metrics: dict[str, float]
    probes: list[ProbeRow] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    steps: int = 0
    resources: dict[str, float] = field(default_factory=dict)  # cpu, gpu Tune granted
    node_id: str = ""
    # few-shot curve points; records written before issue 13 have none (same schema version:
    # the field is optional, so old records read as they are)
    few_shot: list[FewShotRow] = field(default_factory=list)
    # worst-group probes (data with groups); optional, so old records read unchanged
    groups: list[GroupRow] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def flat_config(self) -> dict[str, Any]:
        """Dotted keys -> values: the MLflow params and the tables' config columns."""
        return flatten(self.config)

    def table_metrics(self) -> dict[str, float]:
        """The metric columns of the trials table: the trial's final metrics plus each tap's
        dimension, the phase timings and the granted resources."""
        out = dict(self.metrics)
        for row in self.probes:
            if row.dim is not None:
                out.setdefault(M.dim(row.tap), row.dim)
        out.update({M.time(k): v for k, v in self.timings.items()})
        out.update({M.resources(k): v for k, v in self.resources.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrialRecord:
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"trial record schema version {version!r}, this headsweep reads "
                f"{SCHEMA_VERSION}: analyse the sweep with the headsweep version that ran it, "
                "or re-run it"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RecordError(f"trial record has unknown fields {unknown}")
        values = dict(raw)
        values["probes"] = [ProbeRow.from_dict(p) for p in raw.get("probes", [])]
        values["few_shot"] = [FewShotRow.from_dict(p) for p in raw.get("few_shot", [])]
        values["groups"] = [GroupRow.from_dict(g) for g in raw.get("groups", [])]
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> TrialRecord:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"trial record is not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise RecordError("trial record is not a JSON object")
        return cls.from_dict(raw)
