"""Sweep spec validation: every error names its key; nothing here starts Ray."""

import copy

import pytest

from sweeps.driver import check_fits
from sweeps.overrides import parse_overrides
from sweeps.spec import SpecError, load_spec, parse_spec

BASE = {
    "name": "t",
    "trainable": "contrastive",
    "base": {"data": {"n_train": 128, "n_test": 64}, "train": {"epochs": 1}},
    "space": {
        "model.head": {"grid": [{"name": "none"}, {"name": "fixed_reweight", "kappa": 1.1}]},
        "aug.p_drop": {"grid": [0.0, 0.5]},
        "train.seed": {"grid": [0, 1, 2]},
    },
    "search": {"metric": "probe/digit/pre"},
}


def spec_with(**changes):
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return raw


def test_valid_spec_counts_trials_and_merges_mapping_axes():
    spec = parse_spec(BASE)
    assert spec.num_trials() == 12
    points = list(spec.points())
    assert len(points) == 12
    head = spec.trial_config({"model.head": {"name": "fixed_reweight", "kappa": 1.1}})
    assert head["model"]["head"] == {"name": "fixed_reweight", "kappa": 1.1}
    assert len(spec.digest()) == 12


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"schedular": {"name": "asha"}}, "schedular"),
        ({"base__model": {"head": {"nme": "mlp"}}}, "model.head.nme"),
        ({"base__train": {"epochs": "many"}}, "train.epochs"),
        ({"space__model.head": {"grid": [{"name": "transformer"}]}}, "model.head.name"),
        ({"space__aug.p_drop": {"grid": [0.1, 1.7]}}, "aug.p_drop"),
        ({"space__aug.p_drop": {"between": [0, 1]}}, "space.aug.p_drop"),
        ({"space__optim.lr": {"loguniform": [0, 1]}}, "space.optim.lr.loguniform"),
        ({"space__optim.lr": {"uniform": [1, 0.1]}}, "space.optim.lr.uniform"),
        ({"trainable": "transformer"}, "trainable"),
        ({"search__algorithm": "bayes"}, "search.algorithm"),
        ({"search__algorithm": "optuna"}, "space.model.head"),
        ({"search__metric": "probe/colour/pre"}, "search.metric"),
        ({"search__metric": "accuracy"}, "search.metric"),
        ({"scheduler": {"name": "asha", "metric": "probe/digit/pre"}}, "scheduler.metric"),
        ({"resources": {"gpu": 1.5}}, "resources.gpu"),
        ({"resources": {"cpu": 0}}, "resources.cpu"),
        ({"resources": {"cpus": 1}}, "resources.cpus"),
        ({"max_failures": -1}, "max_failures"),
        ({"name": "has space"}, "name"),
        ({"name": None}, "name"),
    ],
)
def test_bad_specs_name_the_key(changes, key):
    with pytest.raises(SpecError, match=key.replace(".", r"\.")):
        parse_spec(spec_with(**changes))


def test_grid_combination_errors_are_caught_before_anything_runs():
    raw = spec_with(
        **{
            "base__loss": {"name": "supcon", "target": "coarse"},
            "space__loss.target": {"grid": ["coarse", "fine"]},
        }
    )
    with pytest.raises(SpecError, match="loss.target"):
        parse_spec(raw)


def test_overrides_pin_axes_and_change_spec_keys():
    spec = parse_spec(
        BASE, parse_overrides(["aug.p_drop=0.25", "search.num_samples=2", "train.epochs=3"])
    )
    assert "aug.p_drop" not in [a.key for a in spec.space]
    assert spec.base["aug"]["p_drop"] == 0.25 and spec.base["train"]["epochs"] == 3
    assert spec.num_trials() == 2 * 3 * 2
    with pytest.raises(SpecError, match="--set"):
        parse_overrides(["epochs"])


def test_smoke_shrinks_every_trial():
    spec = parse_spec(BASE, smoke=True)
    assert spec.base["train"]["epochs"] == 1 and spec.base["data"]["n_train"] == 256


def test_shipped_specs_all_validate():
    from pathlib import Path

    specs = sorted(Path(__file__).resolve().parents[1].joinpath("sweeps").glob("*.yaml"))
    assert specs
    for path in specs:
        spec = load_spec(path)
        assert spec.num_trials() >= 1, path


def test_resource_requests_that_no_node_can_meet_are_refused():
    spec = parse_spec(spec_with(resources={"cpu": 4, "gpu": 0.5}))
    with pytest.raises(SpecError, match="resources.cpu"):
        check_fits(spec, [{"CPU": 2.0, "GPU": 1.0}])
    with pytest.raises(SpecError, match="resources.gpu"):
        check_fits(spec, [{"CPU": 8.0}])
    check_fits(spec, [{"CPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}])  # the GPU node fits
    custom = parse_spec(spec_with(resources={"cpu": 1, "custom": {"accel": 1}}))
    with pytest.raises(SpecError, match="resources.custom.accel"):
        check_fits(custom, [{"CPU": 2.0}])


def test_profiles_and_space_overrides_replace_axes_in_order():
    raw = {
        **BASE,
        "profiles": {
            "cpu": {"train.epochs": 3, "space.aug.p_drop": {"grid": [0.0, 0.2, 0.4]}},
            "seedless": {"space.train.seed": None},
        },
    }
    spec = parse_spec(raw, profiles=["cpu", "seedless"])
    assert spec.base["train"]["epochs"] == 3
    assert {a.key: len(a.values) for a in spec.space} == {"model.head": 2, "aug.p_drop": 3}
    assert "profiles" not in spec.source  # the stored spec is what ran
    with pytest.raises(SpecError, match="--profile gpu"):
        parse_spec(raw, profiles=["gpu"])


def test_variant_axis_bundles_keys_across_sections_and_smoke_still_pins():
    variants = [
        {"loss.name": "nt_xent", "optim.lr": 0.01},
        {"loss.name": "barlow", "model.head.preset": "barlow", "train.epochs": 5},
    ]
    raw = spec_with(space__variant={"grid": variants})
    spec = parse_spec(raw)
    config = spec.trial_config({"variant": variants[1]})
    assert config["loss"]["name"] == "barlow" and config["model"]["head"]["preset"] == "barlow"
    assert config["train"]["epochs"] == 5 and "variant" not in config
    smoke = parse_spec(raw, smoke=True)
    pinned = smoke.trial_config({"variant": dict(smoke.space[-1].values[1])})
    assert pinned["train"]["epochs"] == 1  # the smoke size wins over the variant
    with pytest.raises(SpecError, match="space.variant"):
        parse_spec(spec_with(space__variant={"grid": [1, 2]}))
    bad = spec_with(space__variant={"grid": [{"loss.name": "hinge"}]})
    with pytest.raises(SpecError, match="loss.name"):
        parse_spec(bad)


def test_explicit_set_that_an_axis_would_overwrite_is_refused_with_the_space_override():
    with pytest.raises(SpecError, match=r"--set 'space.model.head="):
        parse_spec(BASE, parse_overrides(["model.head.name=mlp"]))
    with pytest.raises(SpecError, match=r"space.model.head=null"):
        parse_spec(BASE, parse_overrides(["model={backbone: small_cnn}"]))
    variants = [{"loss.name": "nt_xent"}, {"loss.name": "barlow", "optim.lr": 0.3}]
    with pytest.raises(SpecError, match=r"space.variant"):
        parse_spec(spec_with(space__variant={"grid": variants}), parse_overrides(["optim.lr=1"]))
    pinned = parse_spec(BASE, parse_overrides(["model.head={name: mlp}"]))  # the whole axis
    assert "model.head" not in [a.key for a in pinned.space]


def test_smoke_keeps_explicit_set_values_and_says_so():
    spec = parse_spec(BASE, parse_overrides(["train.epochs=2", "data.n_train=512"]), smoke=True)
    assert spec.base["train"]["epochs"] == 2 and spec.base["data"]["n_train"] == 512
    assert spec.base["data"]["n_test"] == 128  # smoke's other keys still apply
    assert any("train.epochs" in note for note in spec.notes)


@pytest.mark.parametrize("metric", ["train/bogus", "probe/digit/layer1", "online/digit/latents"])
def test_metrics_no_trial_reports_are_refused(metric):
    with pytest.raises(SpecError, match="search.metric"):
        parse_spec(spec_with(search__metric=metric))


def test_relative_data_roots_become_absolute_where_the_command_ran(tmp_path):
    """Tune runs each trial in a directory of its own: `./data` there is an empty folder per
    trial, so the CLI resolves relative roots (base, a data.root axis, variants) against its
    working directory; URIs, `~` and absolute paths are kept, and the spec says what changed."""
    raw = spec_with(base__data__root="./data")
    raw["space"]["data.root"] = {"grid": ["rel/a", "/abs/b", "~/c"]}
    raw["space"]["variant"] = {"grid": [{"data.root": "v"}, {"loss.name": "nt_xent"}]}
    spec = parse_spec(raw, cwd=tmp_path)
    assert spec.base["data"]["root"] == str(tmp_path / "data")
    axis = next(a for a in spec.space if a.key == "data.root")
    assert list(axis.values) == [str(tmp_path / "rel/a"), "/abs/b", "~/c"]
    variant = next(a for a in spec.space if a.key == "variant")
    assert variant.values[0]["data.root"] == str(tmp_path / "v")
    assert spec.source["base"]["data"]["root"] == str(tmp_path / "data")  # what resume reads
    assert sum("is relative" in note for note in spec.notes) == 3
    assert parse_spec(raw).base["data"]["root"] == "./data"  # only the CLI's cwd resolves
