"""headsweep: the science of projection-head sweeps, in pure PyTorch (no Ray, no MLflow).

`pretrain(config) -> TrialResult` runs one contrastive / supervised pretraining trial with
frozen-feature probes on every head tap; `synthetic.run(config)` runs the theory models of
Xue et al. (ICLR 2024). The science behind both, with sources: docs/science.md.

The torch-free modules (`metrics`, `configtree`, `record`, `atomic`, `presets`) import without
loading torch: the names below load `headsweep.train` on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headsweep.config import TrialConfig
    from headsweep.train import pretrain
    from headsweep.trial_state import TrainState, TrialResult, load_checkpoint

_LAZY = {
    "TrialConfig": "headsweep.config",
    "TrainState": "headsweep.trial_state",
    "TrialResult": "headsweep.trial_state",
    "load_checkpoint": "headsweep.trial_state",
    "pretrain": "headsweep.train",
}


def __getattr__(name: str) -> Any:
    # The training stack (torch) loads on first use, so the CLI, the sweep specs and the
    # analysis can import headsweep.metrics and headsweep.record without it.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'headsweep' has no attribute {name!r}")


__all__ = ["TrainState", "TrialConfig", "TrialResult", "load_checkpoint", "pretrain"]
__version__ = "0.1.0"
