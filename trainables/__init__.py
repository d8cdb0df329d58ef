"""The Ray boundary: functions Tune runs, each wrapping a headsweep entry point.

`TRAINABLES` maps the name a sweep spec carries to a `Trainable`: what Tune runs, how a trial
config is parsed and validated, the seed key, the `--smoke` overrides, the metric a sweep watches
by default and which metrics it reports, and an in-process runner (`headsweep trial`,
`headsweep calibrate`). Callers ask the entry, never compare trainable names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from headsweep.configtree import flatten, resolve
from headsweep.record import TrialRecord
from trainables import contrastive, synthetic


class TrialSettings(Protocol):
    """A validated trial config, whichever trainable it belongs to."""

    def to_dict(self) -> dict[str, Any]: ...

    def flat(self) -> dict[str, Any]: ...

    def warnings(self) -> list[str]: ...


EpochHook = Callable[[int, dict[str, float]], None]
S = TypeVar("S", bound=TrialSettings)


@dataclass(frozen=True)
class Trainable(Generic[S]):
    """One kind of trial; S is its config type (TrialConfig, SyntheticConfig)."""

    name: str
    fn: Callable[..., None]  # what Tune runs: fn(trial_config, checkpoint_every=...)
    parse: Callable[[Mapping[str, Any]], S]  # nested config -> validated config
    run_local: Callable[[S, EpochHook | None], TrialRecord]  # one trial, no Ray
    default_metric: Callable[[S], str]  # what progress and tables focus on
    check_metric: Callable[[str, S], str]  # "" if a trial reports the metric, else why not
    seed_key: str  # the config key that seeds a trial (a sweep axis like any other)
    # The spec's nested base -> the dotted overrides that shrink its trials to seconds.
    smoke: Callable[[Mapping[str, Any]], dict[str, Any]]
    calibrates: bool  # image experiments: `headsweep calibrate` trains their control

    def settings(self, tune_config: Mapping[str, Any]) -> S:
        """The validated config of what Tune hands a trial (base + point)."""
        return self.parse(resolve(tune_config))

    def flat_config(self, tune_config: Mapping[str, Any]) -> dict[str, Any]:
        """Dotted keys of the resolved config (every default filled in): the MLflow params and
        the tables' config columns; the unresolved keys when the config is invalid."""
        try:
            return self.settings(tune_config).flat()
        except (ValueError, KeyError):
            return flatten(resolve(tune_config))


# Any: each entry has its own config type; callers pass an entry's own settings back to it.
TRAINABLES: dict[str, Trainable[Any]] = {
    "contrastive": Trainable(
        name=contrastive.NAME,
        fn=contrastive.contrastive,
        parse=contrastive.parse,
        run_local=contrastive.run_local,
        default_metric=contrastive.default_metric,
        check_metric=contrastive.check_metric,
        seed_key=contrastive.SEED_KEY,
        smoke=contrastive.smoke,
        calibrates=True,
    ),
    "synthetic": Trainable(
        name=synthetic.NAME,
        fn=synthetic.run_synthetic,
        parse=synthetic.parse,
        run_local=synthetic.run_local,
        default_metric=synthetic.default_metric,
        check_metric=synthetic.check_metric,
        seed_key=synthetic.SEED_KEY,
        smoke=synthetic.smoke,
        calibrates=False,
    ),
}

__all__ = ["TRAINABLES", "Trainable", "TrialSettings"]
