"""Metric names: every registered family and named metric round-trips through `parse`, and the
questions callers ask are answered from the registry."""

import pytest

from headsweep import metrics as M

SAMPLE = {"target": "digit", "tap": "layer1", "stat": "loss"}


def sample(kind: str) -> M.Metric:
    template = M.FAMILIES[kind].template
    fields = {f: v for f, v in SAMPLE.items() if "{" + f + "}" in template}
    if kind in ("weight", "weight_norm"):
        fields = {"target": "3", "tap": "pre"}
    return M.Metric(kind, **fields)


@pytest.mark.parametrize("kind", list(M.FAMILIES))
def test_every_family_round_trips(kind):
    metric = sample(kind)
    assert M.parse(metric.name) == metric
    assert M.parse(metric.name).name == metric.name


NAMED = [
    M.EPOCH,
    M.LOSS,
    M.TOTAL_LOSS,
    M.MI,
    M.MI_LOWER,
    M.MI_UPPER,
    M.LR,
    M.THROUGHPUT,
    M.EPOCH_TIME,
    M.STEPS,
    M.STEP,
    M.SLOPE,
    M.BALANCEDNESS,
    M.OPTIMAL_LOSS,
    M.probe("digit", "pre"),
    M.probe("feature0", "gap"),
    M.online("object", "post"),
    M.linear_eval("object", "pre"),
    M.dim("layer1"),
    M.time("probe_s"),
    M.resources("gpu"),
    M.weight("post", 4),
    M.weight("pre", 12, normalised=True),
    M.gap_summary("digit", "max"),
    M.best_pre("digit"),
    M.trial_count("finished"),
]


@pytest.mark.parametrize("name", NAMED)
def test_every_named_metric_parses_and_rebuilds(name):
    parsed = M.parse(name)
    assert parsed is not None and parsed.name == name


def test_names_keep_their_published_spelling():
    assert M.probe("digit", "pre") == "probe/digit/pre"
    assert M.online("digit", "gap") == "online/digit/gap"
    assert M.linear_eval("object", "pre") == "linear/object/pre"
    assert M.dim("post") == "dim/post"
    assert M.weight("pre", 2) == "synthetic/pre_weight/2"
    assert M.weight("post", 2, normalised=True) == "synthetic/post_weight_norm/2"
    assert M.gap_summary("digit", "max") == "gap/digit/max"
    assert M.best_pre("digit") == "pre/digit/best"


def test_report_keys_and_tune_bookkeeping_are_not_metrics():
    for key in (M.RESUMED_FROM, M.DONE, M.NODE_ID, "time_total_s", "config", "a/b/c/d"):
        assert M.parse(key) is None and not M.is_value(key)
    assert not M.is_value(M.EPOCH)  # a key column of the tables, not a value column
    assert M.is_value(M.LOSS) and M.is_value(M.dim("pre"))


def test_questions_answered_from_the_registry():
    assert M.per_epoch(M.online("digit", "pre")) and M.per_epoch(M.LOSS)
    assert not M.per_epoch(M.probe("digit", "pre"))
    assert M.partner(M.probe("digit", "pre")) == "probe/digit/post"
    assert M.partner(M.SLOPE) == "" and M.partner(M.probe("digit", "post")) == ""
    assert M.probe_target(M.probe("fine", "pre")) == "fine"
    assert M.probe_target(M.online("fine", "pre")) == ""
    assert M.is_gap(M.online("x", "gap")) and not M.is_gap(M.LOSS)
    columns = [M.weight("pre", 10), M.weight("pre", 2), M.weight("post", 1), M.LOSS]
    assert M.weight_columns(columns, "pre") == [M.weight("pre", 2), M.weight("pre", 10)]
    assert M.feature_index(M.weight("post", 7, normalised=True)) == 7
    with pytest.raises(ValueError):
        M.feature_index(M.LOSS)
