"""headsweep: the science of projection-head sweeps, in pure PyTorch (no Ray, no MLflow).

`pretrain(config) -> TrialResult` runs one contrastive / supervised pretraining trial with
frozen-feature probes on every head tap; `synthetic.run(config)` runs the theory models of
Xue et al. (ICLR 2024). See SCIENCE.md-derived docs in the README.
"""

from headsweep.config import TrialConfig
from headsweep.train import TrainState, TrialResult, load_checkpoint, pretrain

__all__ = ["TrainState", "TrialConfig", "TrialResult", "load_checkpoint", "pretrain"]
__version__ = "0.1.0"
