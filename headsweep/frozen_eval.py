"""What a trial measures on its frozen features besides the linear probes (headsweep.probes):
representation diagnostics of every tap (headsweep.diagnostics), kNN probes (headsweep.knn),
the few-shot curve (headsweep.fewshot) and worst-group accuracy (headsweep.groups). One
`FrozenEvaluation` per trial collects the results and the seconds each part took, so
`headsweep.train` stays the training loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from headsweep import metrics as M
from headsweep.config import TrialConfig
from headsweep.data import Dataset, Split
from headsweep.diagnostics import diagnose, view_taps
from headsweep.fewshot import few_shot_curve
from headsweep.groups import fit_group_probes
from headsweep.knn import knn_metrics
from headsweep.probes import ProbeResult, frozen
from headsweep.views import two_views

Encode = Callable[[Tensor], dict[str, Tensor]]


@dataclass
class FrozenEvaluation:
    cfg: TrialConfig
    data: Dataset
    device: torch.device
    batch_size: int  # feature extraction batch
    metrics: dict[str, float] = field(default_factory=dict)  # final metrics: kNN, diagnostics
    few_shot_rows: list[dict[str, Any]] = field(default_factory=list)
    group_rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # parts of train_s and probe_s

    def timed(self, phase: str, start: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def diagnostics(
        self,
        model: torch.nn.Module,
        encode: Encode,
        split: Split,
        clean: dict[str, Tensor],
        online: bool,
    ) -> dict[str, float]:
        """Effective rank and uniformity of `clean` (the split's probe features, every tap),
        alignment of two views of the split drawn by the trial's own view pipeline. The views'
        generator is seeded afresh on every call: the same draws every epoch (the curve shows
        the model changing, not the views), and the training generator is left untouched."""
        start = time.perf_counter()
        cfg = self.cfg
        g = torch.Generator(self.device).manual_seed(cfg.train.seed)
        with frozen(model):
            view1, view2 = view_taps(
                encode,
                lambda a, b: two_views(split.take(torch.arange(a, b)), cfg.aug, cfg.data, g),
                len(split),
                self.batch_size,
            )
        out = diagnose(clean, view1, view2, online)
        self.timed("diagnostics_s", start)
        return out

    def after_probes(
        self,
        model: torch.nn.Module,
        encode: Encode,
        train_features: dict[str, Tensor],
        test_features: dict[str, Tensor],
        probes: list[ProbeResult],
    ) -> None:
        """kNN probes, exact diagnostics on the test split, the few-shot curve and the
        worst-group probes, on the features the probes used."""
        cfg, train, test = self.cfg.probe, self.data.train, self.data.test
        classes = {t: self.data.classes[t] for t in cfg.targets or self.data.classes}
        if cfg.diagnostics:
            self.metrics.update(self.diagnostics(model, encode, test, test_features, False))
        if cfg.knn_k:
            start = time.perf_counter()
            self.metrics.update(
                knn_metrics(train_features, test_features, train.labels, test.labels, classes, cfg)
            )
            self.timed("knn_s", start)
        if cfg.few_shot_curve:
            start = time.perf_counter()
            rows = few_shot_curve(
                train_features,
                test_features,
                train.labels,
                test.labels,
                classes,
                cfg,
                self.cfg.train.seed,
                # the main probes were fitted on every example: they are the curve's n = 0
                {(r.tap, r.target): r.accuracy for r in probes} if cfg.few_shot == 0 else None,
            )
            self.few_shot_rows = [row.to_dict() for row in rows]
            self.timed("few_shot_s", start)
        if self.data.group_by:  # average and worst-group accuracy of every tap's probe
            groups = fit_group_probes(
                train_features,
                test_features,
                train.labels,
                test.labels,
                self.data.classes,
                self.data.group_by,
                cfg,
                self.cfg.train.seed,
            )
            self.group_rows = [row.to_dict() for row in groups]
            self.metrics.update(group_metrics(self.group_rows))


def group_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """worst/<target>/<tap>/<method> and average/<target>/<tap>/<method> of worst-group probe
    rows, plus tap gap = pre - post where both were scored."""
    out: dict[str, float] = {}
    for row in rows:
        out[M.worst_group(row["target"], row["tap"], row["method"])] = row["worst_group"]
        out[M.group_average(row["target"], row["tap"], row["method"])] = row["average"]
    for row in rows:
        for name in (M.worst_group, M.group_average):
            pre = out.get(name(row["target"], "pre", row["method"]))
            post = out.get(name(row["target"], "post", row["method"]))
            if pre is not None and post is not None:
                out[name(row["target"], "gap", row["method"])] = pre - post
    return out
