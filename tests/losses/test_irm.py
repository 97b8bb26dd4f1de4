"""The IRMv1 term and the reference system's exact unified loss, against hand computations and autograd references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nerlab.losses import PRESETS, LossConfig, combined, irm


def autograd_irm(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference's recipe, head by head: s = 1.0 scales the logits, CE over even and odd positions,
    the product of the two gradients with respect to s, kept in the graph. (K,), float64."""
    out = []
    for k in range(logits.shape[1]):
        z, y = logits[:, k].double(), target[:, k]
        s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
        g1, = torch.autograd.grad(F.cross_entropy(z[0::2] * s, y[0::2]), s, create_graph=True)
        g2, = torch.autograd.grad(F.cross_entropy(z[1::2] * s, y[1::2]), s, create_graph=True)
        out.append(g1 * g2)
    return torch.stack(out)


# ---- a hand computation ---------------------------------------------------------------------------------

def test_irm_by_hand_value_and_gradient():
    """Four positions, one head, two classes, every logit row (0, ln 3): p = (1/4, 3/4), E_p[z] = 3/4 ln 3.

    dCE/ds at s = 1 is E_p[z] - z_y: 3/4 ln 3 for y = 0, -1/4 ln 3 for y = 1. Targets (0, 1, 1, 0): the even
    positions (0, 2) average 1/4 ln 3, the odd ones (1, 3) too, so IRM = (ln 3)^2 / 16.
    Gradient: d(E_p[z] - z_y)/dz_j = p_j (1 + z_j - E_p[z]) - [j = y]; dIRM/dz_n = (1/2) x (the other half's
    mean, 1/4 ln 3) x that.
    """
    ln3 = math.log(3.0)
    logits = torch.tensor([[0.0, ln3]] * 4).reshape(4, 1, 2).requires_grad_(True)
    target = torch.tensor([[0], [1], [1], [0]])
    value = irm(logits, target, None)
    assert value.shape == (1,)
    assert value.item() == pytest.approx(ln3 ** 2 / 16, rel=1e-6)

    value.sum().backward()
    zbar = 0.75 * ln3
    d0, d1 = 0.25 * (1 + 0 - zbar), 0.75 * (1 + ln3 - zbar)  # d g / d z_j before the -[j = y]
    other = 0.25 * ln3
    expected = torch.tensor([[d0 - 1, d1], [d0, d1 - 1], [d0, d1 - 1], [d0 - 1, d1]]) * 0.5 * other
    torch.testing.assert_close(logits.grad.reshape(4, 2), expected, rtol=1e-5, atol=1e-7)


def test_even_and_odd_count_valid_positions_only():
    """A masked position (or a -100 target) is skipped before counting: the hand example with garbage rows
    inserted gives the same value."""
    ln3 = math.log(3.0)
    rows = [[0.0, ln3], [9.0, -9.0], [0.0, ln3], [0.0, ln3], [5.0, 1.0], [0.0, ln3]]
    logits = torch.tensor(rows).reshape(6, 1, 2)
    target = torch.tensor([[0], [1], [1], [1], [-100], [0]])
    mask = torch.tensor([True, False, True, True, True, True])
    assert irm(logits, target, mask).item() == pytest.approx(ln3 ** 2 / 16, rel=1e-6)


def test_one_valid_position_gives_zero():
    logits = torch.randn(3, 2, 3, requires_grad=True)
    target = torch.tensor([[1, 2], [0, 1], [2, 0]])
    value = irm(logits, target, torch.tensor([False, True, False]))
    assert torch.equal(value, torch.zeros(2))
    value.sum().backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# ---- against autograd on random batches ----------------------------------------------------------------

@pytest.mark.parametrize("n,c", [(37, 3), (64, 4)])
def test_irm_equals_the_autograd_recipe_value_and_gradient(n, c):
    g = torch.Generator().manual_seed(n)
    logits = (torch.randn(n, 5, c, generator=g) * 2).requires_grad_(True)
    target = torch.randint(0, c, (n, 5), generator=g)
    ref_logits = logits.detach().double().requires_grad_(True)
    ref = autograd_irm(ref_logits, target)
    got = irm(logits, target, None)
    torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-5, atol=1e-7)
    w = torch.randn(5, generator=g)
    (got * w).sum().backward()
    (ref * w.double()).sum().backward()
    torch.testing.assert_close(logits.grad.double(), ref_logits.grad, rtol=1e-4, atol=1e-7)


# ---- the reference system's exact unified loss ------------------------------------------------------------------------

def formula_unified_seed(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.4 (CE + 5 IRM) + 0.2 Dice + 0.2 Tversky(0.5, 0.5) + 0.2 Focal(2), per head, float64, from the
    published formulas: per-class soft counts over the positions, smoothing 1e-6, mean over classes."""
    z = logits.double()
    n, k, c = z.shape
    p = z.softmax(-1)
    onehot = F.one_hot(target, c).double()
    ce = torch.stack([F.cross_entropy(z[:, h], target[:, h]) for h in range(k)])
    tp, fp, fn = (p * onehot).sum(0), (p * (1 - onehot)).sum(0), ((1 - p) * onehot).sum(0)  # (K, C)
    eps = 1e-6
    dice = (1 - (2 * tp + eps) / (2 * tp + fp + fn + eps)).mean(-1)
    tversky = (1 - (tp + eps) / (tp + 0.5 * fp + 0.5 * fn + eps)).mean(-1)
    pt = (p * onehot).sum(-1)  # (N, K)
    focal = (-(1 - pt) ** 2 * pt.log()).mean(0)
    return 0.4 * (ce + 5 * autograd_irm(z, target)) + 0.2 * dice + 0.2 * tversky + 0.2 * focal


@pytest.mark.parametrize("seed,c", [(0, 3), (1, 4), (2, 4)])
def test_seed_unified_equals_the_formula(seed, c):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(50, 7, c, generator=g) * 2
    target = torch.randint(0, c, (50, 7), generator=g)
    got = combined(logits, target, None, LossConfig.preset("unified-seed"))
    torch.testing.assert_close(got.double(), formula_unified_seed(logits, target).detach(), rtol=1e-6, atol=1e-6)


def test_presets_and_validation():
    assert PRESETS["unified-seed"] == {"ce": 0.4, "irm": 2.0, "dice": 0.2, "tversky": 0.2, "focal": 0.2}
    assert "irm" not in PRESETS["unified"]
    with pytest.raises(ValueError, match="besides the irm penalty"):
        LossConfig({"irm": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        LossConfig({"ce": 1.0, "irm": -1.0})
