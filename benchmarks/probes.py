"""Final frozen-feature probes (`sas`): the batched probe against the one it replaced and
against scikit-learn's LogisticRegression(lbfgs), side by side on the same features.

    python -m benchmarks.probes                  # trains a quickstart model first (~10 s idle)
    python -m benchmarks.probes --features F.pt  # reuse (or write) the features at F.pt
    python -m benchmarks.probes --rounds 1       # smoke run

Features: a trial of sweeps/quickstart.yaml's base at p_drop 0.5 (today textures_v2, grid_cnn,
mlp head, 8 epochs at 3,000 training / 1,000 test images), captured where `pretrain` calls
`fit_probes`: taps pre (512-d), layer1 (512-d), post (128-d) x targets object (20 classes),
coarse (5), digit (10). (Before the v2 instrument: digits_on_texture + small_cnn, pre 128-d.)
The trial's own timings give the probes' share of a quickstart trial.

Rows, each timed on the same 9 probes in the same process, interleaved over `--rounds` rounds
(median of the rounds):
  batched    headsweep.probes.fit_probes (all 9 probes one batch), and per tap
             (`fit_sas_batch` on that tap's 3 probes);
  legacy     the probe before issue 12 (`legacy_fit_sas`: torch.optim.LBFGS, strong Wolfe,
             history 100, raw features, one probe at a time), 1 round: it is slow;
  sklearn    LogisticRegression(solver="lbfgs", C = 1 / (2 n penalty)) for every (dtype,
             tol, max_iter) in SKLEARN_SETTINGS; per tap, the fastest setting whose accuracies
             all lie within 0.5 point of the batched probe's is the one compared.
sklearn's objective is C * sum CE + 1/2 ||W||^2 = 2 n C (mean CE + ||W||^2 / (2 n C)), so
C = 1 / (2 n penalty) gives ours (mean CE + penalty ||W||^2); the run checks it: our objective
at sklearn's tight solution equals our optimum.

Load: `uptime`'s load average before and after is printed; on a busy 2-core machine absolute
times move a lot, ratios measured in the same round much less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from headsweep.config import ProbeConfig
from headsweep.probes import fit_probes, fit_sas_batch, sas_objective

PENALTY, STEPS = 1e-3, 300  # quickstart's probe config
SKLEARN_SETTINGS = [
    (dtype, tol, max_iter)
    for dtype in (np.float32, np.float64)
    for tol, max_iter in (
        (1e-2, 100),
        (1e-3, 100),
        (1e-4, 30),
        (1e-4, 50),
        (1e-4, 100),
        (1e-4, 200),
        (1e-6, 1000),
    )
]
Features = dict[str, Any]


def legacy_fit_sas(
    x: torch.Tensor, y: torch.Tensor, classes: int, penalty: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """headsweep.probes.fit_sas as of commit dd0de0f (before issue 12), without its cache of the
    last closure value (one extra evaluation per iteration instead of a tensor compare)."""
    with torch.enable_grad():
        w = torch.zeros(x.shape[1], classes, requires_grad=True)
        b = torch.zeros(classes, requires_grad=True)
        opt = torch.optim.LBFGS(
            [w, b], lr=1, max_iter=1, max_eval=26, history_size=100, tolerance_grad=0.0,
            tolerance_change=0.0, line_search_fn="strong_wolfe",
        )  # fmt: skip

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = sas_objective(x, y, w, b, penalty)
            loss.backward()
            return loss

        previous, it = float(closure().detach()), 0
        while it < max_iter:
            opt.step(closure)
            it += 1
            current = float(closure().detach())
            if abs(previous - current) <= 1e-9 * max(abs(previous), abs(current)):
                break
            previous = current
    return w.detach(), b.detach(), it


def quickstart_features(path: Path | None, epochs: int) -> Features:
    if path is not None and path.exists():
        return torch.load(path)
    import yaml

    import headsweep.train as train

    cfg = yaml.safe_load(Path("sweeps/quickstart.yaml").read_text())["base"]
    cfg["aug"]["p_drop"] = 0.5
    cfg["train"]["epochs"] = epochs
    captured: dict[str, Any] = {}
    real = train.fit_probes

    def capture(*args: Any, **kwargs: Any) -> Any:
        captured["args"] = args[:5]
        return real(*args, **kwargs)

    train.fit_probes = capture
    try:
        result = train.pretrain(cfg)
    finally:
        train.fit_probes = real
    keys = ("train", "test", "train_labels", "test_labels", "classes")
    out = dict(zip(keys, captured["args"], strict=True), timings=result.timings)
    if path is not None:
        torch.save(out, path)
    return out


def sklearn_fit(x: np.ndarray, y: np.ndarray, setting: tuple, tight: bool = False) -> Any:
    from sklearn.linear_model import LogisticRegression

    dtype, tol, max_iter = setting
    c = 1 / (2 * PENALTY * len(y))
    if tight:
        tol, max_iter = 1e-10, 10_000
    return LogisticRegression(C=c, tol=tol, max_iter=max_iter).fit(x.astype(dtype), y)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def accuracy(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x.double() @ w.double() + b.double()).argmax(1) == y).double().mean())


def objective64(x: torch.Tensor, y: torch.Tensor, w: Any, b: Any) -> float:
    w, b = torch.as_tensor(w).double(), torch.as_tensor(b).double()
    return float(F.cross_entropy(x.double() @ w + b, y) + PENALTY * w.pow(2).sum())


def run(feats: Features, rounds: int) -> dict[str, Any]:
    train, test, ytr, yte, classes = (
        feats[k] for k in ("train", "test", "train_labels", "test_labels", "classes")
    )
    keys = [(tap, tg) for tap in train for tg in classes]
    np_train = {tap: x.numpy() for tap, x in train.items()}
    cfg = ProbeConfig(protocol="sas", penalty=PENALTY, steps=STEPS)
    times: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    acc: dict[str, dict[tuple[str, str], float]] = {}
    batched_fits: dict[tuple[str, str], Any] = {}
    legacy_obj: dict[tuple[str, str], float] = {}
    for r in range(rounds):
        dt, rows = timed(lambda: fit_probes(train, test, ytr, yte, classes, cfg))
        add("batched/all", dt)
        acc["batched"] = {(row.tap, row.target): row.accuracy for row in rows}
        for tap in train:
            problems = [(train[tap], ytr[tg], classes[tg]) for tg in classes]
            dt, fits = timed(partial(fit_sas_batch, problems, PENALTY, STEPS))
            add(f"batched/{tap}", dt)
            batched_fits.update({(tap, tg): f for tg, f in zip(classes, fits, strict=True)})
        if r == 0:  # the legacy probe takes 10-20x longer: one round
            for tap in train:
                spent = 0.0
                for tg in classes:
                    dt, (w, b, _) = timed(
                        partial(legacy_fit_sas, train[tap], ytr[tg], classes[tg], PENALTY, STEPS)
                    )
                    spent += dt
                    acc.setdefault("legacy", {})[tap, tg] = accuracy(w, b, test[tap], yte[tg])
                    legacy_obj[tap, tg] = objective64(train[tap], ytr[tg], w, b)
                add(f"legacy/{tap}", spent)
        for setting in SKLEARN_SETTINGS:
            name = f"sklearn/{setting[0].__name__},tol={setting[1]:g},max_iter={setting[2]}"
            for tap in train:
                spent = 0.0
                for tg in classes:
                    dt, model = timed(partial(sklearn_fit, np_train[tap], ytr[tg].numpy(), setting))
                    spent += dt
                    w, b = (
                        torch.from_numpy(model.coef_.T.copy()),
                        torch.from_numpy(model.intercept_),
                    )
                    acc.setdefault(name, {})[tap, tg] = accuracy(w, b, test[tap], yte[tg])
                add(f"{name}/{tap}", spent)
    med = {k: statistics.median(v) for k, v in times.items()}
    out: dict[str, Any] = {"median_s": med, "accuracy": acc}
    # Checks: same optimum as the legacy probe, and the C mapping via a tight sklearn fit.
    gaps = {}
    for tap, tg in keys:
        fit = batched_fits[tap, tg]
        ours = objective64(train[tap], ytr[tg], fit.weight, fit.bias)
        tight = sklearn_fit(np_train[tap], ytr[tg].numpy(), (np.float64, 0, 0), tight=True)
        sk = objective64(train[tap], ytr[tg], tight.coef_.T, tight.intercept_)
        gaps[f"{tap}/{tg}"] = {
            "batched": ours,
            "legacy-batched": legacy_obj[tap, tg] - ours,
            "sklearn_tight-batched": sk - ours,
        }
    out["objective"] = gaps
    return out


def report(r: dict[str, Any], taps: list[str], load: tuple) -> None:
    med, acc = r["median_s"], r["accuracy"]
    ref = acc["batched"]
    print(f"load average before {load[0]}, after {load[1]}")
    print("\naccuracy (test), batched vs legacy vs sklearn default (float64, tol 1e-4):")
    sk_default = "sklearn/float64,tol=0.0001,max_iter=100"
    for key, a in ref.items():
        print(
            f"  {key[0]:7s} {key[1]:7s} {a:.4f} {acc['legacy'][key]:.4f} {acc[sk_default][key]:.4f}"
        )
    print("\nobjective (float64 re-evaluation): batched, legacy - batched, sklearn tight - batched")
    for key, g in r["objective"].items():
        legacy, sk = g["legacy-batched"], g["sklearn_tight-batched"]
        print(f"  {key:16s} {g['batched']:.7f} {legacy:+.1e} {sk:+.1e}")
    print("\nper tap (3 probes), seconds (median over rounds) and ratios to batched:")
    sklearn_names = sorted({k.rsplit("/", 1)[0] for k in med if k.startswith("sklearn/")})
    total_sk = total_legacy = 0.0
    for tap in taps:
        # sklearn's fastest setting whose accuracies on this tap are all within 0.5 point.
        same = [
            n
            for n in sklearn_names
            if all(abs(acc[n][k] - a) <= 0.005 + 1e-9 for k, a in ref.items() if k[0] == tap)
        ]
        sk_t, sk_name = min(((med[f"{n}/{tap}"], n) for n in same), default=(float("nan"), "none"))
        ours, legacy = med[f"batched/{tap}"], med[f"legacy/{tap}"]
        total_sk, total_legacy = total_sk + sk_t, total_legacy + legacy
        print(
            f"  {tap:7s} batched {ours:.3f}  legacy {legacy:.3f} ({legacy / ours:.1f}x)  "
            f"sklearn {sk_t:.3f} ({sk_t / ours:.1f}x) [{sk_name}]"
        )
    ours = med["batched/all"]
    print(
        f"  all 9   batched {ours:.3f}  legacy {total_legacy:.3f} ({total_legacy / ours:.1f}x)  "
        f"sklearn {total_sk:.3f} ({total_sk / ours:.1f}x)"
    )
    print("\nall sklearn settings (s per tap; * = accuracies within 0.5 point on every probe):")
    for n in sklearn_names:
        flag = "*" if all(abs(acc[n][k] - a) <= 0.005 + 1e-9 for k, a in ref.items()) else " "
        print(f"  {flag} {n:42s} " + "  ".join(f"{med[f'{n}/{t}']:.3f}" for t in taps))
    timings = r.get("trial_timings")
    if timings:
        share = timings["probe_s"] / timings["total_s"]
        print(f"\nquickstart trial that made the features: {timings} (probes {share:.1%})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    # sklearn's capped settings warn on every fit; whether they reach our accuracy is measured.
    warnings.filterwarnings("ignore", message="lbfgs failed to converge")
    torch.set_num_threads(args.threads)
    feats = quickstart_features(args.features, args.epochs)
    load0 = os.getloadavg()
    with threadpool_limits(args.threads):
        r = run(feats, args.rounds)
    r["trial_timings"] = feats.get("timings")
    report(r, list(feats["train"]), (load0, os.getloadavg()))


if __name__ == "__main__":
    main()
