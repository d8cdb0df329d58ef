"""The synthetic theory experiments' config and result ([X] §3-4; docs/science.md §4.1): what one
trial of `headsweep.synthetic.run` takes and what it measured."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from headsweep import metrics as M
from headsweep.configtree import build

# Convergence of the linear model against its closed-form optimum (docs/science.md §10: the
# E5 probe gap is judged only at convergence). Built through the registry's families:
# `synthetic/theory_post_weight/<k>` is the optimum's post weight of feature k, the two scalars
# the largest relative error over features of each layer's trained weights.
THEORY = "theory_post"  # the tap of the closed-form post weights (family `weight`)
POST_ERROR = M.Metric("synthetic", stat="post_weight_error").name
PRE_ERROR = M.Metric("synthetic", stat="pre_weight_error").name


def relative_errors(weights: tuple[float, ...], theory: tuple[float, ...]) -> tuple[float, ...]:
    """Per feature |w_k - t_k| / t_k. A feature the optimum drops (t_k = 0) has no relative
    error, so its weight is measured against the largest optimal weight instead."""
    scale = max(theory, default=0.0)
    return tuple(
        abs(w - t) / t if t > 0 else (abs(w) / scale if scale > 0 else math.nan)
        for w, t in zip(weights, theory, strict=True)
    )


@dataclass(frozen=True)
class SyntheticConfig:
    """One synthetic trial (docs/science.md §4.1). Defaults are [DER]: chosen here, not by [X]."""

    model: str = "linear"  # linear: W2 W1 x | relu: W2 ReLU(W1 x)
    mode: str = "population"  # population (closed form, linear only) | sampled (minibatches)
    dim: int = 20  # d: K feature coordinates + (d - K) noise coordinates
    phi: tuple[float, ...] = (1.0, 0.8, 0.6, 0.4, 0.2)  # feature strengths, K = len(phi)
    noise: float = 0.1  # sigma of the isotropic noise added to every view
    feature_drop: tuple[float, ...] = ()  # p_k: feature k dropped from one view; () = none
    sign_flip: tuple[int, ...] = ()  # features whose sign flips in one view of every pair
    width: int = 20  # m: rows of W1 (the pre-projection dimension)
    out_dim: int = 20  # rows of W2 (the post-projection dimension)
    # Small but not tiny: with std 1e-3 gradient descent sits at the saddle at the origin for
    # ~1e6 steps, because the growth rate of a mode scales with the square of its weight.
    init_std: float = 0.05
    lr: float = 0.02
    steps: int = 8000
    weight_decay: float = 0.0  # lambda on ||W1||^2 + ||W2||^2 (added to the objective)
    batch_size: int = 256  # pairs per step in sampled mode
    seed: int = 0
    probe_shots: int = 100  # labelled training points of the few-shot probe
    # Ridge penalty on the mean squared error, fixed, never tuned per run: comparable to the
    # per-feature variance of a learned representation (~1 for the spectral loss), so a feature
    # the model scales down is shrunk by the probe (docs/science.md §4.1) [DER].
    probe_penalty: float = 0.1
    probe_test: int = 2000  # held-out points the probe is scored on
    # Independent draws of the probe's labelled points: the probe accuracy is their mean, the
    # expectation over draws that E5 judges (one 100-shot draw's sampling noise swamped the
    # gap at convergence; docs/science.md §10).
    probe_draws: int = 64
    report_every: int = 0  # call the callback every this many steps (0 = never)
    device: str = "cpu"

    @property
    def features(self) -> int:
        return len(self.phi)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None = None) -> SyntheticConfig:
        """Build and validate from a flat dict (missing keys take defaults); unknown keys and
        bad values raise ValueError naming the key."""
        cfg = build(cls, raw or {})
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values (the config is flat already): MLflow params, table columns."""
        return self.to_dict()

    def warnings(self) -> list[str]:
        """Settings that run but may not measure what the experiment means: none known."""
        return []

    def validate(self) -> None:
        k = self.features

        def check(key: str, ok: bool, need: str) -> None:
            if not ok:
                raise ValueError(f"{key}: must be {need}, got {getattr(self, key)!r}")

        check("model", self.model in ("linear", "relu"), "one of linear, relu")
        check("mode", self.mode in ("population", "sampled"), "one of population, sampled")
        # The closed form only exists for the linear model.
        check(
            "mode",
            not (self.model == "relu" and self.mode == "population"),
            "sampled when model is relu (the population loss is closed-form only for linear)",
        )
        check(
            "phi",
            k >= 1 and all(math.isfinite(v) and v >= 0 for v in self.phi),
            "a non-empty list of non-negative strengths",
        )
        check("dim", self.dim >= k, f">= len(phi) = {k}")
        check("noise", math.isfinite(self.noise) and self.noise >= 0, ">= 0")
        check(
            "feature_drop",
            len(self.feature_drop) in (0, k) and all(0 <= p <= 1 for p in self.feature_drop),
            f"empty or {k} probabilities in [0, 1]",
        )
        check(
            "sign_flip",
            all(0 <= j < k for j in self.sign_flip)
            and len(set(self.sign_flip)) == len(self.sign_flip),
            f"distinct feature indices in [0, {k})",
        )
        check("width", self.width >= 1, ">= 1")
        check("out_dim", self.out_dim >= 1, ">= 1")
        check("init_std", math.isfinite(self.init_std) and self.init_std > 0, "> 0")
        check("lr", math.isfinite(self.lr) and self.lr > 0, "> 0")
        check("steps", self.steps >= 1, ">= 1")
        check("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, ">= 0")
        check("batch_size", self.batch_size >= 2, ">= 2 (the loss needs negative pairs)")
        check("probe_shots", self.probe_shots >= 2, ">= 2")
        # penalty > 0 keeps the probe scale-sensitive (and its normal equations solvable).
        check(
            "probe_penalty",
            math.isfinite(self.probe_penalty) and self.probe_penalty > 0,
            "> 0 (an unregularised probe is blind to feature rescaling)",
        )
        check("probe_test", self.probe_test >= 1, ">= 1")
        check("probe_draws", self.probe_draws >= 1, ">= 1")
        check("report_every", self.report_every >= 0, ">= 0")
        check(
            "device",
            self.device in ("cpu", "cuda") or self.device.startswith("cuda:"),
            "cpu, cuda or cuda:N",
        )


@dataclass
class SyntheticResult:
    """Everything one synthetic trial measured; per-feature tuples are indexed by k."""

    config: SyntheticConfig
    pre_weight: tuple[float, ...]
    post_weight: tuple[float, ...]
    pre_weight_norm: tuple[float, ...]  # divided by the max over features
    post_weight_norm: tuple[float, ...]
    slope: float  # least-squares slope of log(pre) on log(post) over features; T1 predicts 0.5
    balancedness: float  # ||W1 W1^T - W2^T W2||_F / ||W1 W1^T||_F
    probe_pre: tuple[float, ...]  # ridge-probe accuracy for sign(z_k) from h
    probe_post: tuple[float, ...]  # ... from f(x)
    # Spectral contrastive loss without the weight-decay term: exact (population) for linear,
    # on a fresh 2048-pair batch for relu.
    final_loss: float
    loss_history: tuple[float, ...]
    history_steps: tuple[int, ...]
    optimal_loss: float | None = None  # closed-form minimum (linear model only)
    theory_post_weight: tuple[float, ...] | None = None  # sqrt(M_k) / Sigma_k (linear only)
    state: dict[str, Tensor] = field(default_factory=dict, repr=False)  # W1, W2 on the CPU

    def weight_errors(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """Per-feature relative errors (post, pre) against the closed-form optimum, or None
        where it does not apply (relu, or weight decay > 0: the closed form has none).

        Post is the end-to-end map W = W2 W1, whose optimum is unique. Pre is compared with
        sqrt of the optimal post weight, the balanced factorisation gradient flow from a small
        init reaches (T1); it is off by the init's imbalance (a few % at init std 0.05) even
        at convergence, so convergence is judged on post (analysis.trends_synthetic E5)."""
        theory = self.theory_post_weight
        if theory is None or self.config.weight_decay > 0:
            return None
        pre_theory = tuple(math.sqrt(t) for t in theory)
        return relative_errors(self.post_weight, theory), relative_errors(
            self.pre_weight, pre_theory
        )

    def metrics(self) -> dict[str, float]:
        """Flat metric name -> value, the names reporting and Parquet columns carry."""
        out: dict[str, float] = {
            M.LOSS: self.final_loss,
            M.SLOPE: self.slope,
            M.BALANCEDNESS: self.balancedness,
        }
        if self.optimal_loss is not None:
            out[M.OPTIMAL_LOSS] = self.optimal_loss
        errors = self.weight_errors()
        if errors is not None and self.theory_post_weight is not None:
            out[POST_ERROR] = max(errors[0])
            out[PRE_ERROR] = max(errors[1])
            for k, value in enumerate(self.theory_post_weight):
                out[M.weight(THEORY, k)] = value
        for k in range(len(self.pre_weight)):
            out[M.weight("pre", k)] = self.pre_weight[k]
            out[M.weight("post", k)] = self.post_weight[k]
            out[M.weight("pre", k, normalised=True)] = self.pre_weight_norm[k]
            out[M.weight("post", k, normalised=True)] = self.post_weight_norm[k]
            # Targets are named like the dataset's labels (headsweep.data.synthetic).
            out[M.probe(f"feature{k}", "pre")] = self.probe_pre[k]
            out[M.probe(f"feature{k}", "post")] = self.probe_post[k]
            out[M.probe(f"feature{k}", "gap")] = self.probe_pre[k] - self.probe_post[k]
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("config", "state")
        }
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        out["config"] = self.config.to_dict()
        return out
