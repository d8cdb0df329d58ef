"""The `synthetic` trainable: one run of [X]'s two-layer theory models (headsweep.synthetic).
Runs take seconds, so they report progress but restart rather than checkpoint."""

from __future__ import annotations

from typing import Any

from headsweep import synthetic
from trainables.common import node_id, numeric, report, resolve_variant, use_trial_resources

SMOKE = {"steps": 200}


def validate(config: dict[str, Any]) -> synthetic.SyntheticConfig:
    return synthetic.SyntheticConfig.from_dict(resolve_variant(config))


def run_synthetic(config: dict[str, Any], checkpoint_every: int = 1) -> None:
    del checkpoint_every  # seconds-long runs restart instead
    use_trial_resources()
    result = synthetic.run(
        validate(config), on_epoch=lambda epoch, metrics, state: report(numeric(metrics))
    )
    final = numeric(result.metrics())
    final["done"] = 1.0
    final["node_id"] = node_id()  # type: ignore[assignment]
    report(final)
