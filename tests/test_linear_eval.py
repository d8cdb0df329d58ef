"""[O]'s linear evaluation on a tiny frozen conv encoder and synthetic colour images."""

import dataclasses

import pytest
import torch
from torch import Tensor, nn

from headsweep.config import LinearEvalConfig
from headsweep.data.base import Split
from headsweep.linear_eval import linear_eval, protocol_name, train_heads

CLASSES = {"colour": 4, "warm": 2}
CFG = LinearEvalConfig(epochs=8, optimizer="sgd", lr=0.5, batch_size=32, taps=("pre", "post"))


class TinyEncoder(nn.Module):
    """Random conv -> BN -> ReLU -> global pool ("pre", 16-d) -> Linear ("post", 6-d)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.proj = nn.Linear(16, 6)
        with torch.no_grad():  # non-trivial running statistics to protect
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return {"pre": h, "post": self.proj(h)}


def colour_images(n: int, seed: int) -> Split:
    """Class = one of four base colours (+ noise): linearly separable from the mean colour."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[220, 40, 40], [40, 200, 40], [40, 40, 220], [200, 200, 40]])
    y = torch.randint(4, (n,), generator=g)
    x = palette[y][:, :, None, None] + torch.randn(n, 3, 32, 32, generator=g) * 40
    # A darker left half, so the flip really changes the image.
    x[..., :16] -= 30
    images = x.round().clamp(0, 255).to(torch.uint8)
    return Split(images, {"colour": y, "warm": (y % 3 == 0).long()})


def to_input(images: Tensor) -> Tensor:
    return images.float() / 255 - 0.5


def flip_augment(batch: Split, g: torch.Generator) -> Tensor:
    """The test's stand-in for headsweep.views: identity + random horizontal flip."""
    x = to_input(batch.inputs)
    flip = torch.rand(x.shape[0], generator=g, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def run(model: nn.Module, cfg: LinearEvalConfig = CFG, seed: int = 0, n_train: int = 256):
    train, test = colour_images(n_train, 1), colour_images(200, 2)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        test_features = model(to_input(test.inputs))
    model.train(was_training)
    return linear_eval(
        model,
        train,
        test_features,
        test.labels,
        flip_augment,
        CLASSES,
        cfg,
        ["colour", "warm"],
        seed,
        "cpu",
    )


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_encoder_weights_and_batchnorm_buffers_never_change():
    model = TinyEncoder()
    model.train()  # a careless run would update BN statistics in train mode
    before = snapshot(model)
    run(model, dataclasses.replace(CFG, epochs=2))
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # the caller's mode is restored


def test_lars_run_leaves_the_encoder_alone_too():
    model = TinyEncoder()
    before = snapshot(model)
    cfg = dataclasses.replace(CFG, optimizer="lars", lr=0.3, weight_decay=1e-4, epochs=2)
    rows = run(model, cfg)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(r.protocol.startswith("linear_eval(lars(eta=0.02,clip_lr=True,") for r in rows)


def test_deterministic_for_a_seed():
    train = colour_images(128, 1)
    cfg = dataclasses.replace(CFG, epochs=2)

    def heads(seed: int):
        return train_heads(
            TinyEncoder(),
            train,
            {"pre": 16, "post": 6},
            flip_augment,
            CLASSES,
            cfg,
            ["colour", "warm"],
            seed,
            "cpu",
        )

    a, b, c = heads(0), heads(0), heads(1)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.weight, y.weight) and torch.equal(x.bias, y.bias)
    assert not torch.equal(a[0].weight, c[0].weight)
    assert [r.accuracy for r in run(TinyEncoder(), cfg)] == [
        r.accuracy for r in run(TinyEncoder(), cfg)
    ]


def test_separable_toy_problem_is_learned():
    rows = run(TinyEncoder())
    acc = {(r.tap, r.target): r.accuracy for r in rows}
    assert len(acc) == 4 and all(a >= 0.95 for a in acc.values()), acc  # chance: 0.25 / 0.5


def test_one_augmented_batch_and_one_encoder_pass_serve_every_head():
    calls = {"augment": [], "encode": 0}

    def augment(batch: Split, g: torch.Generator) -> Tensor:
        calls["augment"].append(len(batch))
        return flip_augment(batch, g)

    model = TinyEncoder()

    def encode(x: Tensor) -> dict[str, Tensor]:
        calls["encode"] += 1
        assert not model.training and not torch.is_grad_enabled()  # frozen
        return model(x)

    cfg = dataclasses.replace(CFG, epochs=2, batch_size=48)
    train_heads(
        encode,
        colour_images(100, 1),
        {"pre": 16, "post": 6},
        augment,
        CLASSES,
        cfg,
        ["colour", "warm"],
        0,
        "cpu",
        model=model,
    )
    assert calls["augment"] == [48, 48] * 2  # drop_last: 100 // 48 = 2 batches per epoch
    assert calls["encode"] == 4


def test_one_result_per_tap_and_target_with_the_protocol_name():
    rows = run(TinyEncoder(), dataclasses.replace(CFG, epochs=1))
    assert [(r.tap, r.target) for r in rows] == [
        ("pre", "colour"),
        ("post", "colour"),
        ("pre", "warm"),
        ("post", "warm"),
    ]
    name = protocol_name(dataclasses.replace(CFG, epochs=1))
    assert name == (
        "linear_eval(sgd,lr=0.5,momentum=0.9,wd=0,epochs=1,bs=32,schedule=cosine,warmup=0,"
        "crop=0.08,flip=0.5)"
    )
    assert all(r.protocol == name for r in rows)
    assert {r.dim for r in rows if r.tap == "pre"} == {16}
    assert {r.dim for r in rows if r.tap == "post"} == {6}
    assert all(r.n_train == 256 and r.n_test == 200 for r in rows)


def test_off_and_unknown_taps():
    assert run(TinyEncoder(), dataclasses.replace(CFG, epochs=0)) == []
    with pytest.raises(ValueError, match="linear_eval.taps"):
        run(TinyEncoder(), dataclasses.replace(CFG, taps=("nope",)))
