"""One trial as a plain function: `pretrain(config) -> TrialResult`.

config -> dataset on the device (uint8, once) -> two views per step by batched tensor ops ->
backbone -> head taps -> loss (+ mi_lambda * I_alpha) -> per-epoch metrics (loss, I₂ and its
bounds, a cheap ridge probe, throughput) -> at the end, frozen-feature probes on every tap and
target. The Ray trainable adds reporting and checkpoints around it via `on_epoch`.

An epoch's train/loss and train/total_loss are means over all its steps; train/mi,
train/mi_lower and train/mi_upper are means over its steps 0, k, 2k, ... with
k = train.metrics_every (a systematic sample of the same per-step quantity; k = 1: every step),
since on every step they cost 3-4% of a quickstart epoch (BENCHMARKS.md, Per-step metrics).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from headsweep import metrics as M
from headsweep.config import TrialConfig, ViewConfig
from headsweep.data import Dataset, Split, load_dataset
from headsweep.diagnostics import dead_channel_share, dead_filter_share
from headsweep.frozen_eval import FrozenEvaluation
from headsweep.health import constant_loss, final_measures
from headsweep.linear_eval import linear_eval
from headsweep.losses import LOSSES, nt_xent
from headsweep.optim import build_optimizer, build_scheduler, gradient_norm
from headsweep.probes import extract, fit_probes, frozen, ridge_accuracy
from headsweep.regularizers import bottleneck_metrics, matrix_mutual_information
from headsweep.trial_state import (
    Model,
    TrainState,
    TrialResult,
    autocast_for,
    load_checkpoint,
    resolve_device,
)
from headsweep.views import augment, clean_view, two_views

log = logging.getLogger(__name__)

OnEpoch = Callable[[int, dict[str, float], TrainState], None]


class _Trial:
    """The pieces of one trial; methods are the phases of `pretrain`."""

    def __init__(self, cfg: TrialConfig, data: Dataset, device: torch.device) -> None:
        self.cfg, self.data, self.device = cfg, data, device
        self.autocast = autocast_for(device, cfg.train.precision)
        # channels_last: faster convolutions on tensor cores and, measured, on the CPU too.
        self.channels_last = data.kind == "image" and cfg.train.memory_format != "contiguous"
        in_dim = data.channels if data.kind == "image" else cfg.data.dim
        target = cfg.loss.target
        self.model = Model(cfg, in_dim, data.classes.get(target, 1)).to(device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        n = len(data.train)
        self.batch_size = min(cfg.train.batch_size, n)
        self.steps_per_epoch = n // self.batch_size  # drop the ragged tail: fixed BN batch size
        optimizer = build_optimizer(cfg.optim, list(self.model.parameters()), self.batch_size)
        scheduler = build_scheduler(cfg.optim, optimizer, self.steps_per_epoch, cfg.train.epochs)
        generator = torch.Generator(device).manual_seed(cfg.train.seed)
        self.state = TrainState(self.model, optimizer, scheduler, generator)
        online_n = cfg.probe.online_n
        self.online = (data.train.head(online_n), data.test.head(online_n)) if online_n else None
        # The loss of a classifier on head outputs has no meaning on encoder features: its
        # lower-bound proxy falls back to InfoNCE.
        self.bound_loss = cfg.loss.name != "cross_entropy"
        # What the frozen features show besides the probe rows (kNN, diagnostics, few-shot
        # curve, worst-group accuracy) and the seconds each part took.
        self.extras = FrozenEvaluation(cfg, data, device, max(self.batch_size, 256))
        self.health: dict[str, float] = {}  # headsweep.health's measures, after the probes

    def _input(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def encode(self, x: Tensor) -> dict[str, Tensor]:
        with self.autocast:
            return self.model(self._input(x))

    def encode_views(self, v1: Tensor, v2: Tensor) -> dict[str, Tensor]:
        """Taps of both views stacked (2B rows). joint: one pass, so BatchNorm normalises both
        views with shared batch statistics; per_view: one pass per view, each with its own
        statistics, as solo-learn (and so [O]) forwards them."""
        if self.cfg.train.forward == "joint":
            return self.encode(torch.cat([v1, v2]))
        t1, t2 = self.encode(v1), self.encode(v2)
        return {name: torch.cat([t1[name], t2[name]]) for name in t1}

    def train_epoch(self) -> dict[str, float]:
        cfg, state, model = self.cfg, self.state, self.model
        objective = LOSSES[cfg.loss.name]
        model.train()
        order = torch.randperm(len(self.data.train), generator=state.generator, device=self.device)
        every = cfg.train.metrics_every
        sums = torch.zeros(2, device=self.device)  # loss, total: every step
        # training health (headsweep.health): largest finite gradient norm, non-finite steps
        grad_max = torch.zeros((), device=self.device)
        nonfinite = torch.zeros((), device=self.device)
        parameters = [p for p in model.parameters() if p.requires_grad]
        mi_sums = torch.zeros(3, device=self.device)  # mi, mi_lower, mi_upper: every k-th step
        start = time.perf_counter()
        for step in range(self.steps_per_epoch):
            batch = self.data.train.take(
                order[step * self.batch_size : (step + 1) * self.batch_size]
            )
            v1, v2 = two_views(batch, cfg.aug, cfg.data, state.generator)
            taps = self.encode_views(v1, v2)
            h, z = taps["pre"].float(), taps["post"].float()
            out = z if model.classifier is None else model.classifier(z).float()
            labels = batch.labels[cfg.loss.target] if cfg.loss.target else None
            out1, out2 = out.chunk(2)
            loss = objective(out1, out2, labels, cfg.loss)
            total = loss
            if cfg.loss.mi_lambda > 0:
                total = loss + cfg.loss.mi_lambda * matrix_mutual_information(
                    h, z, cfg.loss.mi_alpha
                )
            state.optimizer.zero_grad(set_to_none=True)
            total.backward()
            norm = gradient_norm(parameters)
            finite = torch.isfinite(norm)
            grad_max = torch.maximum(grad_max, torch.where(finite, norm, 0.0))
            nonfinite += (~finite).float()
            state.optimizer.step()
            state.scheduler.step()
            sums += torch.stack([loss.detach(), total.detach()])
            if step % every:  # the metrics' sample: steps 0, k, 2k, ...
                continue
            with torch.no_grad():
                h1, h2 = h.detach().chunk(2)
                # [O]'s lower-bound proxy uses the method's own loss on encoder features.
                own = (
                    objective(h1, h2, labels, cfg.loss)
                    if self.bound_loss
                    else nt_xent(h1, h2, cfg.loss.temperature)
                )
                z1, z2 = z.detach().chunk(2)
                mi = bottleneck_metrics(h1, h2, z1, z2, own)
            mi_sums += torch.stack([mi["mi"], mi["mi_lower"], mi["mi_upper"]])
        sampled = -(-self.steps_per_epoch // every)  # steps 0, k, 2k, ... < steps_per_epoch
        # The epoch's single device sync.
        means = torch.cat(
            [sums / self.steps_per_epoch, mi_sums / sampled, torch.stack([grad_max, nonfinite])]
        ).tolist()
        seconds = time.perf_counter() - start
        if not all(math.isfinite(v) for v in means[:2]):
            raise FloatingPointError(
                f"loss became {means[0]} at epoch {state.epoch + 1} (loss.name="
                f"{cfg.loss.name}, optim.lr={cfg.optim.lr}); lower the learning rate or check "
                "the inputs"
            )
        return {
            M.LOSS: means[0],
            M.TOTAL_LOSS: means[1],
            M.MI: means[2],
            M.MI_LOWER: means[3],
            M.MI_UPPER: means[4],
            M.GRAD_NORM_MAX: means[5],
            M.NONFINITE_STEPS: means[6],
            M.LR: state.scheduler.get_last_lr()[0],
            M.THROUGHPUT: 2 * self.steps_per_epoch * self.batch_size / seconds,
            M.EPOCH_TIME: seconds,
            M.STEPS: (state.epoch + 1) * self.steps_per_epoch,
        }

    def constant_loss(self) -> float:
        """What a head mapping every input to one vector would score (headsweep.health)."""
        loss = self.cfg.loss
        classes = self.data.classes.get(loss.target, 1) if loss.target else 1
        return constant_loss(
            loss.name, self.batch_size, self.model.head.out_dim, classes, loss.scale
        )

    def features(self, split: Split) -> dict[str, Tensor]:
        g = torch.Generator(self.device).manual_seed(self.cfg.data.seed)  # fixed vector noise
        bs = max(self.batch_size, 256)
        with frozen(self.model):
            return extract(
                self.encode,
                lambda a, b: clean_view(split.take(torch.arange(a, b)), self.cfg.data, g),
                len(split),
                bs,
            )

    def online_probe(self) -> dict[str, float]:
        """Ridge probe on pre and post features of fixed subsets: cheap enough every epoch."""
        if self.online is None:
            return {}
        train, test = self.online
        f_train, f_test = self.features(train), self.features(test)
        out = {}
        for target, classes in self.data.classes.items():
            for tap in ("pre", "post"):
                out[M.online(target, tap)] = ridge_accuracy(
                    f_train[tap],
                    train.labels[target],
                    f_test[tap],
                    test.labels[target],
                    classes,
                    self.cfg.probe.penalty,
                )
            out[M.online(target, "gap")] = (
                out[M.online(target, "pre")] - out[M.online(target, "post")]
            )
        if self.cfg.probe.diagnostics:
            out.update(self.extras.diagnostics(self.model, self.encode, test, f_test, True))
        return out

    def final_probes(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Frozen-feature probes on every tap and target, and (when probe.linear_eval.epochs
        > 0, image data) [O]'s linear evaluation on the taps it names: two lists of rows."""
        train, test = self.data.train, self.data.test
        train_features, test_features = self.features(train), self.features(test)
        results = fit_probes(
            train_features,
            test_features,
            train.labels,
            test.labels,
            self.data.classes,
            self.cfg.probe,
            self.cfg.train.seed,
        )
        self.extras.after_probes(self.model, self.encode, train_features, test_features, results)
        self.health = final_measures(
            self.state.history,
            self.constant_loss(),
            dead_channel_share(train_features["pre"]),
            dead_filter_share(self.model.backbone),
        )
        le = self.cfg.probe.linear_eval
        if le.epochs and self.data.kind == "image":
            # solo-learn's CIFAR linear views: resized crop + flip, no colour ops.
            view = ViewConfig(
                crop_min_scale=le.crop_min_scale,
                horizontal_flip_prob=le.horizontal_flip_prob,
                color_jitter_prob=0.0,
                gray_scale_prob=0.0,
            )
            linear = linear_eval(
                self.encode,
                train,
                {tap: test_features[tap] for tap in le.taps},
                test.labels,
                lambda batch, g: augment(batch, view, self.cfg.data, g),
                self.data.classes,
                le,
                list(self.cfg.probe.targets) or list(self.data.classes),
                self.cfg.train.seed,
                self.device,
                model=self.model,
            )
        else:
            linear = []
        return [r.to_dict() for r in results], [r.to_dict() for r in linear]


def pretrain(
    config: TrialConfig | Mapping[str, Any],
    on_epoch: OnEpoch | None = None,
    resume: str | os.PathLike | Mapping[str, Any] | None = None,
) -> TrialResult:
    """Run one trial. `on_epoch(epoch, metrics, state)` is called after every epoch (1-based);
    `state.save(path)` writes a checkpoint that `resume=` continues exactly."""
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    t0 = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)  # the one seeding point of a trial
    data = load_dataset(cfg.data, device)
    for target in [cfg.loss.target] if cfg.loss.target else []:
        if target not in data.classes:
            raise ValueError(
                f"loss.target: unknown target {target!r} for data.name="
                f"{cfg.data.name!r} (allowed: {', '.join(data.classes)})"
            )
    t_data = time.perf_counter()
    trial = _Trial(cfg, data, device)
    state = trial.state
    if resume is not None:
        state.load_state_dict(resume if isinstance(resume, Mapping) else load_checkpoint(resume))
        log.info("resumed at epoch %d", state.epoch)
    while state.epoch < cfg.train.epochs:
        metrics = trial.train_epoch()
        metrics.update(trial.online_probe())
        state.epoch += 1
        metrics[M.EPOCH] = state.epoch
        state.history.append(metrics)
        log.info("epoch %d/%d loss %.4f", state.epoch, cfg.train.epochs, metrics[M.LOSS])
        if on_epoch is not None:
            on_epoch(state.epoch, metrics, state)
    t_train = time.perf_counter()
    probes, linear = trial.final_probes()
    t_probe = time.perf_counter()
    final = dict(state.history[-1]) if state.history else {}
    for row in probes:
        final[M.probe(row["target"], row["tap"])] = row["accuracy"]
    for row in linear:
        final[M.linear_eval(row["target"], row["tap"])] = row["accuracy"]
    probes += linear
    final.update(trial.extras.metrics)
    final.update(trial.health)
    for target in data.classes:
        if M.probe(target, "pre") in final:
            final[M.probe(target, "gap")] = (
                final[M.probe(target, "pre")] - final[M.probe(target, "post")]
            )
    timings = {
        "data_s": t_data - t0,
        "train_s": t_train - t_data,
        "probe_s": t_probe - t_train,
        "total_s": t_probe - t0,
        **trial.extras.seconds,  # parts of train_s (per-epoch diagnostics) and probe_s
    }
    return TrialResult(
        cfg.to_dict(),
        final,
        probes,
        state.history,
        timings,
        str(device),
        trial.extras.few_shot_rows,
        groups=trial.extras.group_rows,
    )
