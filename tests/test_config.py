import pytest

from headsweep.config import HEAD_PRESETS, TrialConfig
from headsweep.configtree import flatten, unflatten


def test_defaults_round_trip():
    cfg = TrialConfig.from_dict({})
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    flat = cfg.flat()
    assert flat["model.head.name"] == "mlp"
    assert unflatten(flat) == cfg.to_dict()


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"model": {"head": {"kapa": 1.0}}}, "model.head.kapa"),
        ({"model": {"head": {"name": "transformer"}}}, "model.head.name"),
        ({"train": {"epochs": "ten"}}, "train.epochs"),
        ({"train": {"epochs": -1}}, "train.epochs"),
        ({"aug": {"p_drop": 1.5}}, "aug.p_drop"),
        ({"data": {"name": "imagenet"}}, "data.name"),
        ({"optim": {"name": "rmsprop"}}, "optim.name"),
        ({"loss": {"name": "supcon"}}, "loss.target"),
        ({"model": {"head": {"preset": "byol"}}}, "preset"),
        ({"model": {"head": {"k_per_dim": 50, "latents_per_dim": 8}}}, "model.head.k_per_dim"),
        ({"data": {"phi": 3}}, "data.phi"),
        ({"train": {"flag": True}}, "train.flag"),
        ({"model": "resnet"}, "model"),
        ({"train": {"batch_size": True}}, "train.batch_size"),
        ({"train": {"metrics_every": 0}}, "train.metrics_every"),
    ],
)
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        TrialConfig.from_dict(raw)


def test_preset_fills_fields_but_explicit_keys_win():
    cfg = TrialConfig.from_dict({"model": {"head": {"preset": "sas", "out": 64}}})
    head = cfg.model.head
    assert head.hidden == HEAD_PRESETS["sas"]["hidden"]
    assert head.last_bn and not head.bias
    assert head.out == 64


def test_numbers_are_coerced_and_lists_become_tuples():
    cfg = TrialConfig.from_dict({"optim": {"lr": 1}, "data": {"phi": [1, 0.5]}})
    assert isinstance(cfg.optim.lr, float)
    assert cfg.data.phi == (1.0, 0.5)


def test_replace_uses_dotted_keys_and_validates():
    cfg = TrialConfig.from_dict({}).replace({"aug.p_drop": 0.4, "model.head.name": "none"})
    assert cfg.aug.p_drop == 0.4 and cfg.model.head.name == "none"
    with pytest.raises(ValueError, match="aug.p_drop"):
        cfg.replace({"aug.p_drop": -1})


def test_flatten_unflatten_inverse():
    tree = {"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}
    assert unflatten(flatten(tree)) == tree


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"aug": {"recipe": "moco"}}, "aug.recipe"),
        ({"aug": {"view1": {"blur_prob": 0.5}}}, "aug.view1.blur_prob"),
        ({"aug": {"view2": {"solarization_prob": 1.2}}}, "aug.view2.solarization_prob"),
        ({"aug": {"view1": {"gaussian_prob": -0.1}}}, "aug.view1.gaussian_prob"),
        (
            {"aug": {"view1": {"crop_min_scale": 0.9, "crop_max_scale": 0.5}}},
            "aug.view1.crop_max_scale",
        ),
        ({"aug": {"view1": {"crop_min_scale": 0.0}}}, "aug.view1.crop_min_scale"),
        ({"aug": {"view2": {"crop_min_scale": 0.2, "crop_pad": 4}}}, "aug.view2.crop_pad"),
        ({"aug": {"view1": {"hue": 0.7}}}, "aug.view1.hue"),
        ({"aug": {"view1": 0.5}}, "aug.view1"),
        ({"train": {"forward": "both"}}, "train.forward"),
        ({"probe": {"protocol": "logistic"}}, "probe.protocol"),
        ({"probe": {"linear_eval": {"optimizer": "adam"}}}, "probe.linear_eval.optimizer"),
        ({"optim": {"lars_clip_lr": "yes"}}, "optim.lars_clip_lr"),
    ],
)
def test_bad_recipe_values_name_the_key(raw, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        TrialConfig.from_dict(raw)


def test_recipes_fill_both_views_and_the_forward_mode():
    from headsweep.presets import VIEW_RECIPES

    default = TrialConfig.from_dict({})
    assert default.aug.recipe == "sas_digits" and default.aug.symmetric
    assert not default.aug.view1.resized_crop and default.train.forward == "joint"
    simclr = TrialConfig.from_dict({"aug": {"recipe": "simclr_cifar"}})
    assert simclr.aug.symmetric and simclr.train.forward == "per_view"
    v = simclr.aug.view1
    assert (v.crop_min_scale, v.crop_max_scale) == (0.08, 1.0)
    assert v.jitter == (0.8, 0.8, 0.8, 0.2) and v.gaussian_prob == 0.5
    barlow = TrialConfig.from_dict({"aug": {"recipe": "barlow_cifar"}})
    assert not barlow.aug.symmetric
    assert (barlow.aug.view1.solarization_prob, barlow.aug.view2.solarization_prob) == (0, 0.2)
    assert barlow.aug.view1.jitter == (0.4, 0.4, 0.2, 0.1)
    # every recipe field is a ViewConfig field, and explicit keys win over the recipe
    for recipe in VIEW_RECIPES.values():
        assert set(recipe["view1"]) == set(TrialConfig().aug.view1.__dataclass_fields__)
    mixed = TrialConfig.from_dict(
        {
            "aug": {"recipe": "simclr_cifar", "view2": {"gaussian_prob": 0.1}},
            "train": {"forward": "joint"},
        }
    )
    assert (mixed.aug.view1.gaussian_prob, mixed.aug.view2.gaussian_prob) == (0.5, 0.1)
    assert mixed.train.forward == "joint"
    # the resolved config round-trips and records every view field
    assert TrialConfig.from_dict(mixed.to_dict()) == mixed
    assert mixed.flat()["aug.view2.gaussian_prob"] == 0.1
    assert mixed.flat()["aug.view1.crop_min_scale"] == 0.08


def test_replacing_the_recipe_brings_its_views():
    cfg = TrialConfig.from_dict({}).replace({"aug.recipe": "barlow_cifar"})
    assert cfg.aug.view2.solarization_prob == 0.2 and cfg.train.forward == "per_view"
    back = cfg.replace({"aug.recipe": "sas_digits", "aug.view1.gaussian_prob": 0.3})
    assert back.aug.view1.gaussian_prob == 0.3 and back.aug.view2.gaussian_prob == 0.0
    assert back.train.forward == "joint"
