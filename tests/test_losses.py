import math

import pytest
import torch
import torch.nn.functional as F

from headsweep.config import LossConfig
from headsweep.losses import LOSSES, barlow_twins, nt_xent, spectral_contrastive, supcon
from headsweep.regularizers import matrix_mutual_information, renyi_entropy


@pytest.fixture
def views():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)


def test_nt_xent_matches_an_anchor_by_anchor_formula(views):
    z1, z2 = views
    tau = 0.3
    rows = F.normalize(torch.cat([z1, z2]), dim=1).double()
    n = z1.shape[0]
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = [math.exp(float(rows[i] @ rows[k]) / tau) for k in range(2 * n) if k != i]
        losses.append(-math.log(math.exp(float(rows[i] @ rows[positive]) / tau) / sum(sims)))
    assert nt_xent(z1, z2, tau).item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_nt_xent_is_lower_for_aligned_views(views):
    z1, z2 = views
    assert nt_xent(z1, z1 + 0.01 * z2, 0.5) < nt_xent(z1, z2, 0.5)


def test_spectral_contrastive_matches_double_sum(views):
    z1, z2 = views
    n = z1.shape[0]
    pos = sum(float(z1[i] @ z2[i]) for i in range(n)) / n
    neg = sum(float(z1[i] @ z2[j]) ** 2 for i in range(n) for j in range(n) if i != j)
    expected = -2 * pos + neg / (n * (n - 1))
    assert spectral_contrastive(z1, z2).item() == pytest.approx(expected, rel=1e-5)


def test_supcon_matches_loop_and_skips_anchors_without_positive():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(7, 4, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3])  # labels 2 and 3 have no positive
    tau = 0.5
    rows = F.normalize(z, dim=1).double()
    s = rows @ rows.T / tau
    per_anchor = []
    for i in range(7):
        pos = [p for p in range(7) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        log_norm = math.log(sum(math.exp(float(s[i, a])) for a in range(7) if a != i))
        per_anchor.append(-sum(float(s[i, p]) for p in pos) / len(pos) + log_norm)
    assert supcon(z, labels, tau).item() == pytest.approx(sum(per_anchor) / 5, rel=1e-5)


def test_supcon_never_nan_when_no_anchor_has_a_positive():
    z = torch.randn(5, 3, requires_grad=True)
    loss = supcon(z, torch.arange(5), 0.5)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()


def test_barlow_twins_matches_explicit_cross_correlation(views):
    z1, z2 = views
    n = z1.shape[0]
    a = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
    b = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + 1e-5)
    c = a.T @ b / n
    on = ((1 - torch.diagonal(c)) ** 2).sum()
    off = (c**2).sum() - (torch.diagonal(c) ** 2).sum()
    expected = 0.1 * (on + 0.0051 * off)
    assert barlow_twins(z1, z2, 0.0051, 0.1).item() == pytest.approx(expected.item(), rel=1e-5)


def test_losses_are_fp32_under_bf16_inputs(views):
    z1, z2 = (v.bfloat16() for v in views)
    cfg = LossConfig(target="y")
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    for name, objective in LOSSES.items():
        assert objective(z1, z2, y, cfg).dtype == torch.float32, name


def test_i2_closed_form_equals_general_renyi_form():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(40, 8, generator=g), torch.randn(40, 3, generator=g)
    closed = matrix_mutual_information(a, b, alpha=2).item()
    ka, kb = (F.normalize(x.double(), dim=1) @ F.normalize(x.double(), dim=1).T for x in (a, b))

    def h2(k):  # H_2 from the eigenvalues of K / n, independent of the Frobenius shortcut
        eig = torch.linalg.eigvalsh(k / k.shape[0]).clamp_min(0)
        return -math.log(float((eig**2).sum()))

    general = h2(ka) + h2(kb) - h2(ka * kb)
    assert closed == pytest.approx(general, rel=1e-4, abs=1e-5)


def test_renyi_alpha_3_uses_matrix_power():
    x = F.normalize(torch.randn(10, 4, dtype=torch.float64), dim=1)
    k = x @ x.T
    direct = -0.5 * math.log(float(torch.trace(torch.linalg.matrix_power(k / 10, 3))))
    assert renyi_entropy(k, 3).item() == pytest.approx(direct, rel=1e-6)


def test_mi_is_scale_invariant_and_differentiable_in_both_inputs():
    a = torch.randn(32, 6, requires_grad=True)
    b = torch.randn(32, 4, requires_grad=True)
    mi = matrix_mutual_information(a, b)
    scaled = matrix_mutual_information(a * 3.0, b * 0.5)
    assert mi.item() == pytest.approx(scaled.item(), rel=1e-5)
    mi.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_mi_is_larger_for_dependent_than_independent_features():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(64, 8, generator=g)
    dependent = matrix_mutual_information(a, a @ torch.randn(8, 8, generator=g))
    independent = matrix_mutual_information(a, torch.randn(64, 8, generator=g))
    assert dependent > independent


def test_mi_of_zero_codes_is_finite_and_zero_for_a_constant_head():
    # FSQ with 2 levels rounds every coordinate of a row to 0; before the fix this was 0/0 = NaN
    # (a real sweep trial failed on it at epoch 1).
    a = torch.randn(16, 6, requires_grad=True)
    b = torch.zeros(16, 4, requires_grad=True)
    mi = matrix_mutual_information(a, b)
    assert mi.item() == pytest.approx(0.0, abs=1e-6)  # a constant carries no information
    mi.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    partly = b.detach().clone()
    partly[:8] = torch.randn(8, 4)
    assert torch.isfinite(matrix_mutual_information(a, partly))


def _fsq_batch(zero_share: float = 0.25, n: int = 64, d: int = 16) -> torch.Tensor:
    """Head outputs as FSQ emits them: coordinates in {-1, -0.5, 0, 0.5, 1}, a share of rows
    rounded to all zeros (at init: 95% of rows at L = 3, 31% at L = 5; docs/science.md §11)."""
    g = torch.Generator().manual_seed(1)
    z = torch.round(torch.randn(n, d, generator=g) * 2).clamp(-2, 2) / 2
    z[: int(n * zero_share)] = 0
    return z.requires_grad_()


@pytest.mark.parametrize("loss", ["nt_xent", "supcon", "mi_head", "mi_encoder"])
def test_zero_rows_give_a_bounded_finite_gradient(loss):
    """An all-zero row through F.normalize has gradient 1/eps ≈ 1e12 (measured 1.3e11 on a batch
    with 24% zero rows), which froze Adam for ~50,000 steps; through headsweep.normalize it is
    of the size of the other rows' gradients."""
    z1, z2 = _fsq_batch(), _fsq_batch()
    h = torch.randn(64, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    if loss == "nt_xent":
        value = nt_xent(z1, z2, 0.5)
    elif loss == "supcon":
        value = supcon(torch.cat([z1, z2]), torch.arange(128) % 10, 0.5)
    else:  # the MI regulariser's Gram on the head (and the encoder) features
        value = matrix_mutual_information(torch.cat([h, h]), torch.cat([z1, z2]))
    value.backward()
    grads = [z1.grad, z2.grad] + ([h.grad] if loss == "mi_encoder" else [])
    for grad in grads:
        assert grad is not None and torch.isfinite(grad).all()
        assert grad.norm() < 10, f"{loss}: gradient norm {grad.norm():.3g}"
    if loss in ("nt_xent", "supcon"):  # zero rows still learn (FSQ's straight-through path)
        assert z1.grad[:16].abs().sum() > 0


def test_unit_rows_equals_f_normalize_away_from_zero():
    from headsweep.normalize import unit_rows

    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x[5] = 0
    assert torch.allclose(unit_rows(x), F.normalize(x, dim=1), atol=1e-15)
