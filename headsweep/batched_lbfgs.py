"""Many independent multinomial logistic regressions (the `sas` probes of one trial) minimised
together by one batched L-BFGS: problem p has objective

    f_p(W, b) = mean_i CE(x_i W + b, y_i) + penalty * ||W||^2        (bias unpenalised)

The objectives are separable, so each problem keeps its own curvature history, step length and
stopping rule (a batched loop is P L-BFGS runs in lockstep, not one L-BFGS on the sum); only
the tensor operations are shared. Why: on this project's probe sizes (3,000 rows, d <= 512,
<= 20 classes) one function evaluation is a few hundred microseconds of matmul, while
torch.optim.LBFGS spends milliseconds of per-op overhead per iteration (a two-loop recursion
over 100 history pairs, closure bookkeeping). Batching the probes of a trial pays that
overhead once per iteration for all of them.

Problems are grouped by feature matrix: the targets probed on one tap share `x`, so their
logits come from one matmul (x @ [W_1 | W_2 | ...]). Parameters are stored padded to
(P, d_max + 1, k_max) (last row: bias); padded feature rows and padded classes (logit -inf)
get no data gradient and start at 0, so the penalty keeps them at 0: the padding changes no
objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Armijo sufficient-decrease constant (torch's strong-Wolfe line search uses the same c1).
_C1 = 1e-4
# Function evaluations per line search before a problem counts as unable to make progress.
_MAX_LINE_SEARCH = 25
# Curvature pairs kept per problem. The probes converge in tens to ~150 iterations; 20 pairs
# give the same iteration counts as torch's 100 at a fifth of the two-loop's cost.
_HISTORY = 20


@dataclass(frozen=True)
class Problem:
    """One probe: rows of `x` (n, d) labelled `y` (n,) in [0, classes)."""

    x: Tensor
    y: Tensor
    classes: int


@dataclass(frozen=True)
class Solution:
    weight: Tensor  # (d, classes), float32
    bias: Tensor  # (classes,)
    objective: float  # f_p at (weight, bias), as evaluated in float32
    iterations: int
    converged: bool  # the relative-change rule fired before max_iter


# Widest tap that is whitened: the float64 eigendecomposition is cubic in d (an 8,192-latent SAE
# tap took 281 s against 0.9 s for the rest of a trial's probes); wider taps are centred only.
WHITEN_MAX_DIM = 1024


def _whiten(xc: Tensor, penalty: float) -> tuple[Tensor, Tensor | None, Tensor]:
    """Partially whitened features xc @ T, T = U diag((lam + tau)^-1/2) from the eigenpairs
    (lam, U) of the feature covariance, tau = mean(lam); and the penalty per row of V so that
    penalty ||T V||^2 = sum_r omega_r ||V_r||^2 (U is orthogonal). W = T V is a linear change of
    variables: the same optimum, reached by L-BFGS in far fewer iterations. Why partial: full
    whitening (tau -> 0) solves the overlapping-class probes in ~15 iterations but slows the
    nearly separable ones (their curvature at the optimum is the penalty's, not the data's);
    tau = mean(lam) measured best for both on quickstart features (max 71 iterations over the
    9 probes against 159 with centring alone, and 240 for torch's L-BFGS before)."""
    if xc.shape[1] > WHITEN_MAX_DIM:  # centred only: the identity change of variables
        return xc, None, torch.full((xc.shape[1],), penalty, device=xc.device)
    cov = (xc.T @ xc).double() / xc.shape[0]
    lam, U = torch.linalg.eigh(cov)
    lam = lam.clamp_min(0)
    scale = (lam + lam.mean() + 1e-12).rsqrt()
    transform = (U * scale).float()
    return xc @ transform, transform, (penalty * scale * scale).float()


class _Objective:
    """f_p and its gradient for all problems at once, analytically (no autograd graph: it
    would add more overhead per evaluation than the matmuls cost)."""

    def __init__(self, problems: list[Problem], penalty: float) -> None:
        self.penalty = penalty
        self.d_max = max(p.x.shape[1] for p in problems)
        self.k_max = max(p.classes for p in problems)
        self.shape = (len(problems), self.d_max + 1, self.k_max)
        device = problems[0].x.device
        # Group consecutive problems that share a feature matrix (same tensor object).
        self.groups: list[tuple[slice, Tensor, Tensor, Tensor, Tensor]] = []
        self.means: list[Tensor] = []
        self.transforms: list[Tensor | None] = []  # None: not whitened (identity)
        self.omega = torch.full((len(problems), self.d_max, 1), penalty, device=device)
        start = 0
        while start < len(problems):
            stop = start + 1
            while stop < len(problems) and problems[stop].x is problems[start].x:
                stop += 1
            x = problems[start].x.float()
            # Centred features: the same optimum in W (the bias absorbs the mean: b = b_c - mu W)
            # with a far better conditioned problem (fewer iterations, less float32 error).
            mean = x.mean(0)
            xc, transform, omega = _whiten(x - mean, penalty)
            self.omega[start:stop, : x.shape[1], 0] = omega
            self.transforms.extend([transform] * (stop - start))
            ys = torch.stack([p.y for p in problems[start:stop]], 1)  # (n, m)
            classes = torch.tensor([p.classes for p in problems[start:stop]], device=device)
            pad = torch.arange(self.k_max, device=device) >= classes[:, None]  # (m, k_max)
            onehot = torch.zeros(*ys.shape, self.k_max, device=device)
            onehot.scatter_(-1, ys[..., None], 1.0)
            self.groups.append((slice(start, stop), xc, ys, pad, onehot))
            self.means.extend([mean] * (stop - start))
            start = stop

    def __call__(self, theta: Tensor, active: list[bool] | None = None) -> tuple[Tensor, Tensor]:
        """theta (P, d_max + 1, k_max) -> objectives (P,), gradient like theta. Groups whose
        problems are all inactive (stopped) are skipped: their entries are left meaningless."""
        w = theta[:, : self.d_max]
        f = (self.omega * w.pow(2)).sum((1, 2))
        grad = torch.zeros_like(theta)
        grad[:, : self.d_max] = (2 * self.omega) * w
        for index, x, ys, pad, onehot in self.groups:
            if active is not None and not any(active[index]):
                continue
            n, d = x.shape
            m = ys.shape[1]
            wg = theta[index, :d].permute(1, 0, 2).reshape(d, m * self.k_max)
            z = (x @ wg).view(n, m, self.k_max) + theta[index, self.d_max]
            z = z.masked_fill(pad, float("-inf"))
            lse = torch.logsumexp(z, -1, keepdim=True)
            f[index] += (lse.squeeze(-1) - z.gather(-1, ys[..., None]).squeeze(-1)).mean(0)
            dz = (torch.exp(z - lse) - onehot).div_(n)  # d mean-CE / d logits; padded: 0
            gw = (x.T @ dz.view(n, m * self.k_max)).view(d, m, self.k_max).permute(1, 0, 2)
            grad[index, :d] += gw
            grad[index, self.d_max] += dz.sum(0)
        return f, grad

    def unpack(self, theta: Tensor, problems: list[Problem]) -> list[tuple[Tensor, Tensor]]:
        """(weight, bias) per problem on the original, uncentred features."""
        out = []
        for p, (t, mean) in enumerate(zip(theta, self.means, strict=True)):
            d, k = problems[p].x.shape[1], problems[p].classes
            transform = self.transforms[p]
            weight = t[:d, :k] if transform is None else transform @ t[:d, :k]
            out.append((weight, t[self.d_max, :k] - mean @ weight))
        return out


def _direction(g: Tensor, history: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
    """-H g by the two-loop recursion, per problem (rows of the (P, N) tensors); a pair with
    rho = 0 (no valid curvature for that problem) is a no-op for it."""
    q = g.clone()
    alphas = []
    for s, y, rho in reversed(history):
        a = rho * (s * q).sum(1)
        q.sub_(a[:, None] * y)
        alphas.append(a)
    if history:
        s, y, rho = history[-1]
        yy = (y * y).sum(1)
        gamma = torch.where(rho > 0, 1 / (rho * yy).clamp_min(1e-30), torch.ones_like(yy))
        q.mul_(gamma[:, None])
    for (s, y, rho), a in zip(history, reversed(alphas), strict=True):
        b = rho * (y * q).sum(1)
        q.add_((a - b)[:, None] * s)
    return q.neg_()


def minimise(problems: list[Problem], penalty: float, max_iter: int, rtol: float) -> list[Solution]:
    """Minimise every f_p from W = 0, b = 0 by L-BFGS (backtracking Armijo line search; the
    objective is strictly convex in W and convex in b, so every accepted step has s^T y > 0
    and needs no Wolfe curvature test). Problem p stops when |f_prev - f| <= rtol *
    max(|f_prev|, |f|) after an iteration, when no step along its direction decreases f
    (float32 exhausted), or after max_iter iterations; stopped problems are frozen while the
    others go on."""
    objective = _Objective(problems, penalty)
    theta = torch.zeros(objective.shape, device=problems[0].x.device)
    P = len(problems)
    f, g = objective(theta)
    flat = theta.view(P, -1)
    done = torch.zeros(P, dtype=torch.bool, device=theta.device)
    converged = done.clone()
    iterations = torch.zeros(P, dtype=torch.long, device=theta.device)
    history: list[tuple[Tensor, Tensor, Tensor]] = []
    for it in range(max_iter):
        running = (~done).tolist()
        d = _direction(g.view(P, -1), history)
        d[done] = 0
        gtd = (g.view(P, -1) * d).sum(1)
        # torch's first step: min(1, 1/||g||_1), so the first trial point is not absurdly far.
        t = (1 / g.view(P, -1).abs().sum(1)).clamp(max=1.0) if it == 0 else torch.ones_like(f)
        # A problem whose direction is no longer a descent direction has nothing left to gain.
        stuck = ~done & (gtd >= 0)
        t = torch.where(done | stuck, torch.zeros_like(t), t)
        for _ in range(_MAX_LINE_SEARCH):
            new_flat = flat + t[:, None] * d
            f_new, g_new = objective(new_flat.view_as(theta), running)
            ok = (f_new <= f + _C1 * t * gtd) | (t == 0)
            if bool(ok.all()):
                break
            # Quadratic interpolation of the step, kept within [0.1 t, 0.5 t].
            curv = 2 * (f_new - f - t * gtd)
            guess = -gtd * t * t / curv.clamp_min(1e-30)
            t = torch.where(ok, t, torch.minimum(torch.maximum(guess, 0.1 * t), 0.5 * t))
        else:
            # Still no decrease: that problem keeps its point and stops (stuck).
            stuck |= ~ok
            t = torch.where(ok, t, torch.zeros_like(t))
            new_flat = flat + t[:, None] * d
            f_new, g_new = objective(new_flat.view_as(theta), running)
        active = ~done
        iterations += active.long()
        s, y = new_flat - flat, (g_new - g).view(P, -1)
        sy = (s * y).sum(1)
        rho = torch.where(active & (sy > 0), 1 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        history.append((s, y, rho))
        if len(history) > _HISTORY:
            history.pop(0)
        change = (f - f_new).abs() <= rtol * torch.maximum(f.abs(), f_new.abs())
        converged |= active & (change | stuck)
        done |= converged
        flat, f = new_flat, torch.where(active, f_new, f)
        g = torch.where(active[:, None, None], g_new, g)
        if bool(done.all()):
            break
    theta = flat.view_as(theta)
    return [
        Solution(weight, bias, float(f[p]), int(iterations[p]), bool(converged[p]))
        for p, (weight, bias) in enumerate(objective.unpack(theta, problems))
    ]
