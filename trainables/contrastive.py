"""The `contrastive` trainable: one `headsweep.pretrain` trial under Tune.

Reports every epoch (training metrics and the cheap online probe), checkpoints every
`checkpoint_every` epochs and at the end, resumes from Tune's checkpoint, and reports the final
probe table as the last result. Exceptions propagate: Tune records the failure and retries."""

from __future__ import annotations

import json
from typing import Any

from headsweep import TrialConfig, pretrain
from headsweep import metrics as M
from trainables.common import (
    node_id,
    numeric,
    report,
    resolve_variant,
    restored_state,
    use_trial_resources,
)

# --smoke: every trial shrunk to seconds (tiny data, one epoch).
SMOKE = {
    "data.n_train": 256,
    "data.n_test": 128,
    "train.epochs": 1,
    "train.batch_size": 64,
    "probe.steps": 50,
    "probe.online_n": 64,
}


def validate(config: dict[str, Any]) -> TrialConfig:
    return TrialConfig.from_dict(resolve_variant(config))


def contrastive(config: dict[str, Any], checkpoint_every: int = 1) -> None:
    cfg = validate(config)
    granted = use_trial_resources()
    epochs = cfg.train.epochs
    restored = restored_state()
    # Recorded in every report, so a resumed trial shows where it picked up.
    resumed_from = float(restored["epoch"]) if restored else 0.0

    def on_epoch(epoch: int, metrics: dict[str, float], state: Any) -> None:
        due = checkpoint_every and (epoch % checkpoint_every == 0 or epoch == epochs)
        report({**numeric(metrics), "resumed_from_epoch": resumed_from}, state if due else None)

    result = pretrain(cfg, on_epoch=on_epoch, resume=restored)
    final = numeric(result.metrics)
    for row in result.probes:
        final[f"dim/{row['tap']}"] = row["dim"]
    final.update({f"time/{k}": v for k, v in result.timings.items()})
    final["resources/cpu"], final["resources/gpu"] = granted["cpu"], granted["gpu"]
    final[M.EPOCH] = epochs
    final["resumed_from_epoch"] = resumed_from
    final["done"] = 1.0
    final["node_id"] = node_id()  # type: ignore[assignment]  # a string, kept out of MLflow
    summary = {"probes": result.probes, "timings": result.timings, "device": result.device}
    report(final, extra_files={"result.json": json.dumps(summary, indent=1)})
