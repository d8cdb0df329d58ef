"""The Ray boundary: functions Tune runs, each wrapping a headsweep entry point.

`TRAINABLES` maps the name a sweep spec carries to the function, its config validator (run on
every trial config before anything starts) and its `--smoke` overrides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainables import contrastive, synthetic


@dataclass(frozen=True)
class TrainableInfo:
    fn: Callable[..., None]
    validate: Callable[[dict[str, Any]], Any]
    smoke: dict[str, Any]


TRAINABLES: dict[str, TrainableInfo] = {
    "contrastive": TrainableInfo(contrastive.contrastive, contrastive.validate, contrastive.SMOKE),
    "synthetic": TrainableInfo(synthetic.run_synthetic, synthetic.validate, synthetic.SMOKE),
}

__all__ = ["TRAINABLES", "TrainableInfo"]
