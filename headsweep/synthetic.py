"""Theory experiments of [X] (Xue et al., ICLR 2024, §3-4; docs/science.md §4.1), small enough for a
CPU in seconds.

Two models on the vector data of `headsweep.data.synthetic`, trained with the spectral
contrastive loss L = -2 E[f(x)^T f(x+)] + E[(f(x)^T f(x'))^2]:

- `linear`: f(x) = W2 W1 x; pre = h = W1 x, post = W2 W1 x. Trained on the closed-form
  population loss (`mode="population"`) or on sampled minibatches (`mode="sampled"`).
- `relu`: f(x) = W2 ReLU(W1 x) (no biases); trained on sampled minibatches, typically with the
  sign-flip augmentation that asks the output to be invariant to sign(z_j) ([X] §4).

Population loss of the linear model, with W = W2 W1 (dim x dim after the product):
    M = E[x x+^T] = diag(s_k (1 - p_k) phi_k^2) on features, 0 on noise coordinates
        (s_k = -1 for a sign-flipped feature, +1 otherwise),
    Sigma = E[x x^T] = diag(phi_k^2 (1 - p_k / 2) + noise^2) on features, noise^2 elsewhere,
    L(W) = -2 tr(W M W^T) + ||W Sigma W^T||_F^2   (+ weight_decay (||W1||^2 + ||W2||^2)).
Its minimum over W of rank r is -sum over the r largest positive c_k = M_k / Sigma_k of c_k^2,
reached at ||W e_k|| = sqrt(M_k) / Sigma_k (derived in `theory_post_weight`). Gradient flow from
a small init keeps W1 W1^T - W2^T W2 near 0, so ||W1 e_k|| = sqrt(||W2 W1 e_k||) ([X] §3: the
lower layer weights features more evenly than the output does).

Outputs per feature k: pre weight ||W1 e_k|| and post weight ||W2 W1 e_k|| (relu: the norm of the
end-to-end Jacobian column, ||W2 diag(1[W1 x > 0]) W1 e_k||, averaged over clean test inputs),
raw and normalised by their max over features; the log-log slope of pre against post; the
balancedness ||W1 W1^T - W2^T W2||_F / ||W1 W1^T||_F; and few-shot ridge probes for sign(z_k) on
pre and post features of clean inputs. The ridge penalty is fixed on purpose: an unregularised
probe is blind to rescaling of axis-aligned features, so it cannot see the reweighting the head
does (docs/science.md §4.1).

Why vector data has two paths, and what they share: this module trains [X]'s exact two-layer
models, whose closed-form loss, per-feature weights and balancedness the theory trends T1-T5
are stated for; `pretrain` on `data.name: synthetic` sends the same data through the general
pipeline (backbone, head, loss, frozen probes) and checks that pipeline, not the theory. One
would have to give up either the closed form or the pipeline, so both stay; they share the data
and its views (`headsweep.data.synthetic.embed`, `feature_views`), the spectral loss and the
one closed-form ridge probe (`headsweep.probes.ridge_accuracy`). The theory's config stays flat
(`SyntheticConfig`: its keys are the theory's symbols and its stored sweeps' columns).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from headsweep import metrics as M
from headsweep.data.synthetic import embed, feature_views
from headsweep.losses import spectral_contrastive
from headsweep.probes import ridge_predict
from headsweep.synthetic_config import SyntheticConfig, SyntheticResult

log = logging.getLogger(__name__)

Callback = Callable[[int, dict[str, float], dict[str, Any]], None]


# --------------------------------------------------------------------------- population loss


def population_moments(cfg: SyntheticConfig) -> tuple[Tensor, Tensor]:
    """Diagonals of M = E[x x+^T] and Sigma = E[x x^T], each float64 (dim,) (docs/science.md §4.1).

    A view keeps feature k with probability 1 - p_k / 2 (dropped in one of the two views with
    probability p_k), both views share it with probability 1 - p_k, and a sign-flipped feature
    enters the positive pair with opposite signs, which turns its M entry negative."""
    k = cfg.features
    phi2 = torch.tensor(cfg.phi, dtype=torch.float64) ** 2
    p = torch.tensor(cfg.feature_drop or (0.0,) * k, dtype=torch.float64)
    sign = torch.ones(k, dtype=torch.float64)
    sign[list(cfg.sign_flip)] = -1.0
    m = torch.zeros(cfg.dim, dtype=torch.float64)
    m[:k] = sign * (1 - p) * phi2
    sigma = torch.full((cfg.dim,), cfg.noise**2, dtype=torch.float64)
    sigma[:k] += phi2 * (1 - p / 2)
    return m, sigma


def population_loss(w: Tensor, m: Tensor, sigma: Tensor) -> Tensor:
    """-2 tr(W M W^T) + ||W Sigma W^T||_F^2 for W: (out, dim) and diagonal M, Sigma: (dim,).
    Equals the expected spectral contrastive loss of f(x) = W x ([X] §3)."""
    positive = (w * w * m).sum()
    gram = (w * sigma) @ w.T
    return -2 * positive + gram.pow(2).sum()


def population_gradient(w: Tensor, m: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """The population loss and its gradient with respect to W: (out, dim),
    dL/dW = 4 (W Sigma W^T W Sigma - W M), without building a graph."""
    ws = w * sigma
    gram = ws @ w.T
    loss = -2 * (w * w * m).sum() + gram.pow(2).sum()
    return loss, 4 * (gram @ ws - w * m)


def theory_post_weight(cfg: SyntheticConfig) -> tuple[tuple[float, ...], float]:
    """Closed-form optimum of the linear model without weight decay: post weights
    ||W e_k|| = sqrt(M_k) / Sigma_k for the r = min(width, out_dim) features with the largest
    positive c_k = M_k / Sigma_k (0 for the others), and the minimal loss -sum c_k^2.

    Derivation: with A = W^T W and B = Sigma^1/2 A Sigma^1/2 the loss is
    -2 tr(B C) + ||B||_F^2, C = diag(c_k), minimised by projecting onto C's top-r positive part."""
    m, sigma = population_moments(cfg)
    c = m / sigma
    rank = min(cfg.width, cfg.out_dim)
    order = torch.argsort(c, descending=True)[:rank]
    chosen = order[c[order] > 0]
    post = torch.zeros(cfg.dim, dtype=torch.float64)
    post[chosen] = m[chosen].sqrt() / sigma[chosen]
    return tuple(post[: cfg.features].tolist()), float(-(c[chosen] ** 2).sum())


# --------------------------------------------------------------------------- measurements


PROBE_DRAWS_SEED = 1_000_003  # offset of the probe draws' generator from the trial's seed


def _sign_probe(
    train: Tensor, y_train: Tensor, test: Tensor, y_test: Tensor, penalty: float
) -> float:
    """Few-shot probe for sign(z_k): the one closed-form ridge probe of `headsweep.probes` on the
    two classes, fitted on every draw of labelled points at once (train (draws, n, D), y_train
    bool (draws, n)) and scored on one test set (test (t, D), y_test (t,)): the mean accuracy
    over the draws. With two classes it is ridge on +-1 targets with an unpenalised intercept,
    min_w mean((X w + b - y)^2) + penalty ||w||^2, predicting sign(X w + b) (scikit-learn's
    RidgeClassifier with alpha = penalty * n): the argmax of the centred one-hot fit is the sign
    of the +-1 fit. The fixed penalty shrinks directions of small variance hardest, which is
    what makes the probe see a feature the model has scaled down; a representation whose signal
    is tiny next to the penalty falls back to the majority class."""
    predicted = ridge_predict(train, y_train.long(), test, 2, penalty)
    return (predicted == y_test.long()).double().mean().item()


def _slope(pre: Tensor, post: Tensor) -> float:
    """Least-squares slope of log(pre) on log(post) over the features whose post weight is not
    negligible (< 1e-6 of the max has no meaningful logarithm); NaN with fewer than 2 left."""
    keep = post > 1e-6 * post.max()
    if keep.sum() < 2:
        return float("nan")
    lx, ly = post[keep].log(), pre[keep].log()
    lx = lx - lx.mean()
    denominator = (lx * lx).sum()
    if denominator <= 0:
        return float("nan")
    return float((lx * (ly - ly.mean())).sum() / denominator)


def _forward(cfg: SyntheticConfig, w1: Tensor, w2: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """x: (N, dim) -> (pre (N, width), post (N, out_dim))."""
    h = x @ w1.T
    if cfg.model == "relu":
        h = torch.relu(h)
    return h, h @ w2.T


def _feature_weights(
    cfg: SyntheticConfig, w1: Tensor, w2: Tensor, x: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-feature pre ||W1 e_k|| and post weights, each (K,). Linear: post = ||W2 W1 e_k||.
    ReLU: post = mean over the clean inputs x of ||J(x) e_k|| with the end-to-end Jacobian
    J(x) = W2 diag(1[W1 x > 0]) W1, the local analogue of the linear post weight."""
    k = cfg.features
    pre = w1[:, :k].norm(dim=0)
    if cfg.model == "linear":
        post = (w2 @ w1[:, :k]).norm(dim=0)
    else:
        active = (x @ w1.T > 0).to(w1.dtype)  # (N, width)
        columns = torch.einsum("om,nm,mk->nok", w2, active, w1[:, :k])  # (N, out, K)
        post = columns.norm(dim=1).mean(0)
    return pre, post


# --------------------------------------------------------------------------- training


def run(
    config: SyntheticConfig | Mapping[str, Any], on_epoch: Callback | None = None
) -> SyntheticResult:
    """Train one synthetic model and measure it (docs/science.md §4.1, trends T1-T5).

    `on_epoch(epoch, metrics, state)` is called every `report_every` steps (epoch = number of
    reports so far, from 1) with metrics {"train/loss", "train/step"} and state {"W1", "W2"}
    (detached, on the trial's device), so a Ray trainable can report progress."""
    cfg = config if isinstance(config, SyntheticConfig) else SyntheticConfig.from_dict(config)
    cfg.validate()
    device = torch.device(cfg.device)
    # Population mode is tiny matrices: float64 costs nothing and keeps the closed form exact.
    dtype = torch.float64 if cfg.mode == "population" else torch.float32
    generator = torch.Generator(device).manual_seed(cfg.seed)  # the trial's only seed
    k = cfg.features

    # Probe data first, so runs that share (seed, phi, dim, noise) are probed on the same points.
    z_probe = torch.randn(
        cfg.probe_shots + cfg.probe_test, k, generator=generator, device=device, dtype=dtype
    )
    x_probe = embed(z_probe, cfg.phi, cfg.dim, cfg.noise, generator)
    if cfg.probe_draws > 1:
        # The other draws of labelled points from a generator of their own, so the model's
        # initialisation (next on the trial's generator) is the same whatever probe_draws is.
        draws = torch.Generator(device).manual_seed(PROBE_DRAWS_SEED + cfg.seed)
        z_more = torch.randn(
            (cfg.probe_draws - 1) * cfg.probe_shots, k, generator=draws, device=device, dtype=dtype
        )
        x_more = embed(z_more, cfg.phi, cfg.dim, cfg.noise, draws)
        shots = cfg.probe_shots
        z_probe = torch.cat([z_probe[:shots], z_more, z_probe[shots:]])
        x_probe = torch.cat([x_probe[:shots], x_more, x_probe[shots:]])

    w1 = cfg.init_std * torch.randn(
        cfg.width, cfg.dim, generator=generator, device=device, dtype=dtype
    )
    w2 = cfg.init_std * torch.randn(
        cfg.out_dim, cfg.width, generator=generator, device=device, dtype=dtype
    )
    w1.requires_grad_(True)
    w2.requires_grad_(True)
    m, sigma = (t.to(device, dtype) for t in population_moments(cfg))

    def sampled_loss(pairs: int) -> Tensor:
        """Spectral contrastive loss on `pairs` fresh latents and their two views."""
        z = torch.randn(pairs, k, generator=generator, device=device, dtype=dtype)
        x1, x2 = feature_views(
            z, cfg.phi, cfg.dim, cfg.noise, cfg.feature_drop, cfg.sign_flip, generator
        )
        return spectral_contrastive(_forward(cfg, w1, w2, x1)[1], _forward(cfg, w1, w2, x2)[1])

    def gradients() -> tuple[Tensor, Tensor, Tensor]:
        if cfg.mode == "population":
            # Closed-form gradient: autograd costs several times more on these tiny matrices,
            # which matters at 1e4 steps.
            with torch.no_grad():
                loss, grad = population_gradient(w2 @ w1, m, sigma)
                g1, g2 = w2.T @ grad, grad @ w1.T  # chain rule through W = W2 W1
                if cfg.weight_decay:
                    g1 = g1 + 2 * cfg.weight_decay * w1
                    g2 = g2 + 2 * cfg.weight_decay * w2
            return loss, g1, g2
        loss = sampled_loss(cfg.batch_size)
        objective = loss
        if cfg.weight_decay:
            objective = loss + cfg.weight_decay * (w1.pow(2).sum() + w2.pow(2).sum())
        g1, g2 = torch.autograd.grad(objective, (w1, w2))
        return loss.detach(), g1, g2

    history_every = max(1, cfg.steps // 100)
    history: list[float] = []
    history_steps: list[int] = []
    for step in range(1, cfg.steps + 1):
        loss, g1, g2 = gradients()
        with torch.no_grad():  # plain (stochastic) gradient descent, no momentum
            w1 -= cfg.lr * g1
            w2 -= cfg.lr * g2
        value = float(loss)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss diverged to {value} at step {step}: lower lr (now {cfg.lr})"
            )
        if step % history_every == 0 or step == cfg.steps:
            history.append(value)
            history_steps.append(step)
        if on_epoch is not None and cfg.report_every and step % cfg.report_every == 0:
            on_epoch(
                step // cfg.report_every,
                {M.LOSS: value, M.STEP: float(step)},
                {"W1": w1.detach(), "W2": w2.detach()},
            )

    w1, w2 = w1.detach(), w2.detach()
    with torch.no_grad():
        if cfg.model == "linear":
            # The exact expected loss, also for sampled training: no minibatch noise in the report.
            final_loss = float(population_loss(w2 @ w1, m, sigma))
        else:
            # No closed form: one large fresh batch keeps the minibatch noise of the report small.
            final_loss = float(sampled_loss(2048))

        n = cfg.probe_draws * cfg.probe_shots
        x_test = x_probe[n:]
        pre, post = _feature_weights(cfg, w1, w2, x_test)
        h, f = _forward(cfg, w1, w2, x_probe)
        labels = z_probe > 0

        def probe(x: Tensor, j: int) -> float:
            """The mean accuracy over the draws (each `probe_shots` labelled points)."""
            train = x[:n].reshape(cfg.probe_draws, cfg.probe_shots, -1)
            y = labels[:n, j].reshape(cfg.probe_draws, cfg.probe_shots)
            return _sign_probe(train, y, x[n:], labels[n:, j], cfg.probe_penalty)

        probe_pre = tuple(probe(h, j) for j in range(k))
        probe_post = tuple(probe(f, j) for j in range(k))
        gram1 = w1 @ w1.T
        balancedness = float((gram1 - w2.T @ w2).norm() / gram1.norm())
        slope = _slope(pre, post)

    optimal_loss = theory = None
    if cfg.model == "linear":
        theory, optimal_loss = theory_post_weight(cfg)

    def normalised(v: Tensor) -> tuple[float, ...]:
        top = float(v.max())
        return tuple((v / top).tolist()) if top > 0 else tuple(0.0 for _ in range(k))

    result = SyntheticResult(
        config=cfg,
        pre_weight=tuple(pre.tolist()),
        post_weight=tuple(post.tolist()),
        pre_weight_norm=normalised(pre),
        post_weight_norm=normalised(post),
        slope=slope,
        balancedness=balancedness,
        probe_pre=probe_pre,
        probe_post=probe_post,
        final_loss=final_loss,
        loss_history=tuple(history),
        history_steps=tuple(history_steps),
        optimal_loss=optimal_loss,
        theory_post_weight=theory,
        state={"W1": w1.cpu(), "W2": w2.cpu()},
    )
    log.info(
        "synthetic %s/%s: loss %.4f slope %.3f balancedness %.3g",
        cfg.model,
        cfg.mode,
        final_loss,
        slope,
        balancedness,
    )
    return result


__all__ = [
    "SyntheticConfig",
    "SyntheticResult",
    "population_gradient",
    "population_loss",
    "population_moments",
    "run",
    "theory_post_weight",
]
