import pytest
import torch

from headsweep.config import HeadConfig, TrialConfig
from headsweep.heads import HEADS, build_head, fsq_quantize, reweight_vector


def head(name: str, **kw) -> torch.nn.Module:
    cfg = TrialConfig.from_dict({"model": {"head": {"name": name, **kw}}}).model.head
    return build_head(32, cfg)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_head_exposes_pre_and_post_taps(name):
    torch.manual_seed(0)
    h = torch.randn(16, 32, requires_grad=True)
    g = head(name, hidden=24, out=12, latents_per_dim=2, k_per_dim=5 / 32)
    taps = g(h)
    assert next(iter(taps)) == "pre" and list(taps)[-1] == "post"
    assert torch.equal(taps["pre"], h)
    assert taps["post"].shape == (16, g.out_dim)
    taps["post"].float().sum().backward()  # every head passes gradient to the encoder
    assert h.grad is not None and h.grad.abs().sum() > 0


def test_mlp_taps_every_layer_and_presets_have_paper_shapes():
    torch.manual_seed(0)
    taps = head("mlp", depth=3, hidden=20, out=10)(torch.randn(8, 32))
    assert list(taps) == ["pre", "layer1", "layer2", "post"]
    assert taps["layer1"].shape == (8, 20) and (taps["layer1"] >= 0).all()  # post-ReLU
    sas = build_head(
        512,
        HeadConfig(
            **{
                **HeadConfig().__dict__,
                "hidden": 512,
                "out": 128,
                "batch_norm": True,
                "last_bn": True,
                "bias": False,
            }
        ),
    )
    assert sum(p.numel() for p in sas.parameters()) == 512 * 512 + 2 * 512 + 512 * 128
    barlow = head("mlp", preset="barlow")
    assert [m.out_features for m in barlow.modules() if isinstance(m, torch.nn.Linear)] == [
        2048,
        2048,
        2048,
    ]


def test_fixed_reweight_kappa_one_is_identity_and_weights_are_frozen_but_saved():
    h = torch.randn(8, 32)
    g = head("fixed_reweight", kappa=1.0)
    assert torch.equal(g(h)["post"], h)
    assert not list(g.parameters())
    assert any(k.endswith("weights") for k in g.state_dict())
    g2 = head("fixed_reweight", kappa=1.05)
    expected = h * 1.05 ** -torch.arange(32, dtype=torch.float64).float()
    torch.testing.assert_close(g2(h)["post"], expected)


def test_reweight_tail_does_not_underflow_to_zero():
    r = reweight_vector(512, 1.5)
    assert (r > 0).all()
    assert r[-1] == torch.finfo(torch.float32).tiny  # clamped, not denormal or zero
    assert torch.isclose(r[10], torch.tensor(1.5**-10))


@pytest.mark.parametrize("levels", [2, 3, 4, 5, 8])
def test_fsq_outputs_only_l_levels_with_straight_through_gradient(levels):
    z = (torch.randn(4096, 6) * 2).requires_grad_()
    q = fsq_quantize(z, levels)
    for column in q.detach().T:
        assert len(torch.unique(column)) <= levels
    assert len(torch.unique(q.detach())) == levels  # with wide inputs every level occurs
    q.sum().backward()
    # straight-through round, tanh derivative kept: dq/dz = half * (1 - tanh^2(z + shift)) / (L//2)
    half = (levels - 1) * (1 - 1e-3) / 2
    shift = torch.tan(torch.tensor((0.5 if levels % 2 == 0 else 0.0) / half))
    expected = half * (1 - torch.tanh(z.detach() + shift) ** 2) / (levels // 2)
    torch.testing.assert_close(z.grad, expected)


def test_topk_sae_keeps_exactly_k_active_latents_and_kept_ones_carry_gradient():
    torch.manual_seed(0)
    g = head("topk_sae", latents_per_dim=2, k_per_dim=5 / 32)  # d = 32: 64 latents, k = 5
    h = torch.randn(32, 32)
    taps = g(h)
    active = (taps["latents"] != 0).sum(1)
    assert (active == 5).all()
    assert taps["post"].shape == (32, 32)  # decodes back to the input width
    taps["post"].sum().backward()
    assert g.encoder.weight.grad.abs().sum() > 0
    assert set(head("topk_sae", k_per_dim=0.25, sae_prelude=True, hidden=16)(h)) == {
        "pre",
        "prelude",
        "latents",
        "post",
    }


def test_linear_and_none_heads():
    h = torch.randn(4, 32)
    assert torch.equal(head("none")(h)["post"], h)
    assert head("linear", out=7)(h)["post"].shape == (4, 7)


def test_topk_sae_is_sized_by_k_over_input_width():
    # [O]'s SimCLR SAE: k = 1000 of 100k latents on d = 512, i.e. k/d = 1.953125.
    cfg = TrialConfig.from_dict(
        {"model": {"head": {"name": "topk_sae", "k_per_dim": 1000 / 512, "latents_per_dim": 4}}}
    ).model.head
    g = build_head(512, cfg)
    assert (g.k, g.latents) == (1000, 2048)
    # the prelude's width is the SAE's input width (Barlow variant)
    wide = TrialConfig.from_dict(
        {
            "model": {
                "head": {"name": "topk_sae", "k_per_dim": 0.5, "sae_prelude": True, "hidden": 64}
            }
        }
    ).model.head
    assert build_head(512, wide).k == 32
    tiny = TrialConfig.from_dict({"model": {"head": {"name": "topk_sae", "k_per_dim": 0.01}}})
    with pytest.raises(ValueError, match="model.head.k_per_dim"):
        build_head(32, tiny.model.head)
