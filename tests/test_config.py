import pytest

from headsweep.config import HEAD_PRESETS, TrialConfig, flatten, unflatten


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
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"aug": {"p_drop": 1.5}}, "aug.p_drop"),
        ({"data": {"name": "imagenet"}}, "data.name"),
        ({"optim": {"name": "rmsprop"}}, "optim.name"),
        ({"loss": {"name": "supcon"}}, "loss.target"),
        ({"model": {"head": {"preset": "byol"}}}, "preset"),
        ({"model": {"head": {"k": 5000, "latents": 100}}}, "model.head.k"),
        ({"data": {"phi": 3}}, "data.phi"),
        ({"train": {"flag": True}}, "train.flag"),
        ({"model": "resnet"}, "model"),
        ({"train": {"batch_size": True}}, "train.batch_size"),
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
