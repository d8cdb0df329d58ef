"""Training health: did a trial train? (docs/science.md §11)

A trial can fail to learn without raising: the FSQ head froze Adam after two steps (a ~1e11
gradient through F.normalize of a zero row), coupled weight decay drove an encoder's
low-gradient filters to 1% of their norm. Both gave numbers that looked like results. Every
trial therefore measures, besides its results:

- its final loss against the loss of a *constant* head for its loss function (the loss a head
  that maps every input to one vector gets: NT-Xent and SupCon log(2N − 1), Barlow Twins
  scale·D, cross-entropy log(classes); the spectral loss has none);
- the largest gradient norm of any step and the number of steps with a non-finite one;
- the share of encoder output channels that are dead (no variance over the training set), the
  largest share of any encoder layer's filters that are dead (norm under 1% of the layer's
  largest filter), and, from the diagnostics, the effective rank of the encoder features.

The measurements on tensors live with the others (headsweep.diagnostics: dead channels and
filters; headsweep.optim: the gradient norm); this module is plain Python, so the analysis
judges stored trials without loading torch. `assess` turns the numbers into `OK` or the
reasons, with thresholds fixed here from the mechanisms above (before any run was judged by
them): a loss within 2% of the constant head's, any non-finite gradient, a gradient norm above
1e6 (normal steps here are O(1–100); the freeze came from 1/eps-sized ones), dead channels above
half, dead filters above a quarter of a layer, an effective rank under 1.5. The analysis
recomputes the verdict from the stored metrics, so a changed threshold re-judges stored sweeps
without rerunning them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from headsweep import metrics as M

OK = "ok"
UNMEASURED = "not measured"  # a trial stored before health was recorded (still used)
USABLE = (OK, UNMEASURED)  # what a verdict may average
# Final loss / a constant head's loss at or above this: did not learn. Within 2%: a freshly
# initialised small encoder already sits at ~0.97 of it after 8 steps (the tests' sweeps), so a
# looser rule would flag every short trial; the FSQ freeze itself (0.96-0.99) is caught by its
# gradient norm, the mechanism.
NEAR_CONSTANT = 0.98
EXPLODING = 1e6  # a gradient norm above this
DEAD_CHANNELS = 0.5  # share of encoder output channels with no variance
DEAD_FILTERS = 0.25  # share of one encoder layer's filters under 1% of its largest
COLLAPSED_RANK = 1.5  # effective rank of the encoder features


def constant_loss(loss: str, batch: int, out_dim: int, classes: int, scale: float) -> float:
    """The loss of a head that maps every input to one vector (NaN where it has none: the
    spectral loss reaches its minimum over constants, −1, with a constant)."""
    if loss in ("nt_xent", "supcon"):  # every logit equal: cross-entropy over 2N − 1 others
        return math.log(2 * batch - 1)
    if loss == "barlow":  # BatchNorm of a constant is 0: C = 0, every diagonal term costs 1
        return scale * out_dim
    if loss == "cross_entropy":
        return math.log(max(classes, 2))
    return math.nan


def final_measures(
    history: Sequence[Mapping[str, float]],
    constant: float,
    dead_channels: float,
    dead_filters: float,
) -> dict[str, float]:
    """The health/* metrics of a finished trial from its per-epoch history (train/loss,
    train/grad_norm_max, train/nonfinite_steps), its constant head's loss and the dead shares
    of its encoder (headsweep.diagnostics)."""
    last = history[-1] if history else {}
    loss = float(last.get(M.LOSS, math.nan))
    return {
        M.HEALTH_LOSS_RATIO: loss / constant if math.isfinite(constant) else math.nan,
        M.HEALTH_GRAD_MAX: max((float(h.get(M.GRAD_NORM_MAX, 0.0)) for h in history), default=0),
        M.HEALTH_NONFINITE: float(sum(h.get(M.NONFINITE_STEPS, 0.0) for h in history)),
        M.HEALTH_DEAD_CHANNELS: dead_channels,
        M.HEALTH_DEAD_FILTERS: dead_filters,
    }


def problems(metrics: Mapping[str, float]) -> list[str]:
    """The reasons a trial did not train, from its final metrics; [] when healthy (or when it
    measured nothing: a trial stored before health was recorded is not judged here)."""

    def value(name: str) -> float:
        v = metrics.get(name)
        return float(v) if isinstance(v, int | float) and math.isfinite(v) else math.nan

    out = []
    ratio = value(M.HEALTH_LOSS_RATIO)
    if ratio >= NEAR_CONSTANT:
        out.append(f"did not learn: final loss {ratio:.0%} of a constant head's")
    if value(M.HEALTH_NONFINITE) > 0:
        out.append(f"{value(M.HEALTH_NONFINITE):.0f} non-finite gradient step(s)")
    if value(M.HEALTH_GRAD_MAX) > EXPLODING:
        out.append(f"exploding gradients (max norm {value(M.HEALTH_GRAD_MAX):.2g})")
    if value(M.HEALTH_DEAD_CHANNELS) > DEAD_CHANNELS:
        out.append(f"{value(M.HEALTH_DEAD_CHANNELS):.0%} of encoder channels dead")
    if value(M.HEALTH_DEAD_FILTERS) > DEAD_FILTERS:
        out.append(f"{value(M.HEALTH_DEAD_FILTERS):.0%} of an encoder layer's filters dead")
    if value(M.rank("pre")) < COLLAPSED_RANK:
        out.append(f"collapsed (encoder effective rank {value(M.rank('pre')):.2f})")
    return out


def assess(metrics: Mapping[str, float]) -> str:
    """`OK`, the reasons joined by "; ", or `UNMEASURED` when the trial recorded no health."""
    if M.HEALTH_LOSS_RATIO not in metrics:
        return UNMEASURED
    return "; ".join(problems(metrics)) or OK
