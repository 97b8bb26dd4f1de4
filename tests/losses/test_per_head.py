"""Per-head losses checked against independent references (numpy loops, torch.nn.functional)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nerlab.losses import (
    PER_HEAD_LOSSES,
    PRESETS,
    LossConfig,
    combined,
    cross_entropy,
    dice,
    focal,
    tversky,
)

N, K, C = 40, 5, 3


def make_batch(seed: int = 0, n: int = N, k: int = K, c: int = C):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, c, generator=g) * 3
    target = torch.randint(0, c, (n, k), generator=g)
    mask = torch.rand(n, generator=g) < 0.7
    mask[0] = True
    return logits, target, mask


# ---- independent references: plain numpy loops over heads, positions and classes ----

def ref_confusion(logits, target, mask, head):
    """Soft (TP, FP, FN) lists per class for one head, by explicit loops."""
    lg, tg, mk = logits.double().numpy(), target.numpy(), mask.numpy()
    c = lg.shape[-1]
    tp, fp, fn = [0.0] * c, [0.0] * c, [0.0] * c
    for n in range(lg.shape[0]):
        if not mk[n] or tg[n, head] == -100:
            continue
        z = lg[n, head]
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        for cls in range(c):
            y = 1.0 if tg[n, head] == cls else 0.0
            tp[cls] += p[cls] * y
            fp[cls] += p[cls] * (1 - y)
            fn[cls] += (1 - p[cls]) * y
    return tp, fp, fn


def ref_tversky(logits, target, mask, alpha, beta, smooth):
    out = []
    for k in range(logits.shape[1]):
        tp, fp, fn = ref_confusion(logits, target, mask, k)
        per_class = [1 - (t + smooth) / (t + alpha * a + beta * b + smooth) for t, a, b in zip(tp, fp, fn)]
        out.append(sum(per_class) / len(per_class))
    return torch.tensor(out, dtype=torch.float32)


def ref_dice(logits, target, mask, smooth):
    out = []
    for k in range(logits.shape[1]):
        tp, fp, fn = ref_confusion(logits, target, mask, k)
        per_class = [1 - (2 * t + smooth) / (2 * t + a + b + smooth) for t, a, b in zip(tp, fp, fn)]
        out.append(sum(per_class) / len(per_class))
    return torch.tensor(out, dtype=torch.float32)


def ref_focal(logits, target, mask, gamma):
    out = []
    for k in range(logits.shape[1]):
        terms = []
        for n in range(logits.shape[0]):
            if not mask[n] or target[n, k] == -100:
                continue
            z = logits[n, k].double().tolist()
            log_pt = z[target[n, k]] - math.log(sum(math.exp(v) for v in z))
            terms.append(-((1 - math.exp(log_pt)) ** gamma) * log_pt)
        out.append(sum(terms) / len(terms))
    return torch.tensor(out, dtype=torch.float32)


def ref_ce(logits, target, mask):
    """torch.nn.functional.cross_entropy with ignore_index, one head at a time."""
    ignored = torch.where(mask[:, None], target, -100)
    return torch.stack([F.cross_entropy(logits[:, k], ignored[:, k], ignore_index=-100) for k in range(logits.shape[1])])


# ---- agreement with the references ----

def test_cross_entropy_matches_functional_with_ignore_index():
    logits, target, mask = make_batch(1)
    torch.testing.assert_close(cross_entropy(logits, target, mask), ref_ce(logits, target, mask))


def test_focal_gamma_zero_is_cross_entropy():
    logits, target, mask = make_batch(2)
    torch.testing.assert_close(focal(logits, target, mask, gamma=0.0), ref_ce(logits, target, mask))


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
def test_focal_matches_loop_reference(gamma):
    logits, target, mask = make_batch(3)
    torch.testing.assert_close(focal(logits, target, mask, gamma=gamma), ref_focal(logits, target, mask, gamma))


@pytest.mark.parametrize("smooth", [0.0, 1e-6, 1.0])
def test_dice_matches_loop_reference(smooth):
    logits, target, mask = make_batch(4)
    torch.testing.assert_close(dice(logits, target, mask, smooth=smooth), ref_dice(logits, target, mask, smooth))


@pytest.mark.parametrize("alpha,beta", [(0.5, 0.5), (0.3, 0.7), (1.0, 0.0), (2.0, 1.5)])
def test_tversky_matches_loop_reference(alpha, beta):
    logits, target, mask = make_batch(5)
    got = tversky(logits, target, mask, alpha=alpha, beta=beta, smooth=1e-6)
    torch.testing.assert_close(got, ref_tversky(logits, target, mask, alpha, beta, 1e-6))


def test_tversky_half_half_equals_dice():
    logits, target, mask = make_batch(6)
    exact = tversky(logits, target, mask, 0.5, 0.5, smooth=0.0)
    torch.testing.assert_close(exact, dice(logits, target, mask, smooth=0.0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(tversky(logits, target, mask), dice(logits, target, mask), rtol=0, atol=1e-6)


def test_dice_hand_worked_example():
    # Probabilities are set directly: logits = log(p) gives softmax = p. Position 2 is masked.
    #   pos0 p = [0.5, 0.25, 0.25]   pos1 p = [0.2, 0.6, 0.2]
    # Head 0, targets [0, 1]:
    #   class 0: TP = 0.5, FP = 0.2, FN = 0.5 -> 1 - 1.0 / 1.7 = 7/17
    #   class 1: TP = 0.6, FP = 0.25, FN = 0.4 -> 1 - 1.2 / 1.85 = 13/37
    #   class 2: TP = 0, FP = 0.45, FN = 0 -> 1
    #   mean = (7/17 + 13/37 + 1) / 3 ~= 0.587705
    # Head 1, targets [0, 0]:
    #   class 0: TP = 0.7, FP = 0, FN = 0.5 + 0.8 = 1.3 -> 1 - 1.4 / 2.7 = 13/27
    #   class 1: TP = 0, FP = 0.85 -> 1;  class 2: TP = 0, FP = 0.45 -> 1
    #   mean = (13/27 + 2) / 3 ~= 0.827160
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.9, 0.05, 0.05]])
    logits = probs.log()[:, None, :].expand(3, 2, 3).clone()
    target = torch.tensor([[0, 0], [1, 0], [2, 1]])
    mask = torch.tensor([True, True, False])
    expected = torch.tensor([(7 / 17 + 13 / 37 + 1) / 3, (13 / 27 + 2) / 3])
    torch.testing.assert_close(dice(logits, target, mask, smooth=0.0), expected)
    torch.testing.assert_close(dice(logits, target, mask), expected, rtol=0, atol=1e-5)


# ---- masking ----

@pytest.mark.parametrize("name", sorted(PER_HEAD_LOSSES))
def test_masked_positions_never_change_a_loss(name):
    logits, target, mask = make_batch(7)
    base = PER_HEAD_LOSSES[name](logits, target, mask)
    g = torch.Generator().manual_seed(99)
    for garbage in (torch.randn(N, K, C, generator=g) * 50, torch.full((N, K, C), float("nan"))):
        noisy_logits = torch.where(mask[:, None, None], logits, garbage)
        noisy_target = torch.where(mask[:, None], target, torch.randint(0, C, (N, K), generator=g))
        assert torch.equal(PER_HEAD_LOSSES[name](noisy_logits, noisy_target, mask), base)
    # Dropping the masked rows altogether gives the same loss too.
    torch.testing.assert_close(PER_HEAD_LOSSES[name](logits[mask], target[mask], None), base)


@pytest.mark.parametrize("name", sorted(PER_HEAD_LOSSES))
def test_ignore_index_equals_mask_false(name):
    logits, target, mask = make_batch(8)
    via_target = torch.where(mask[:, None], target, -100)
    fn = PER_HEAD_LOSSES[name]
    torch.testing.assert_close(fn(logits, via_target, None), fn(logits, target, mask))
    # Per-head -100 masks only that head: it must match the head computed alone.
    head_only = target.clone()
    head_only[mask.logical_not(), 2] = -100
    torch.testing.assert_close(fn(logits, head_only, None)[2], fn(logits[:, 2:3], target[:, 2:3], mask)[0])


def test_mask_none_means_all_positions():
    logits, target, _ = make_batch(9)
    full = torch.ones(N, dtype=torch.bool)
    for fn in PER_HEAD_LOSSES.values():
        torch.testing.assert_close(fn(logits, target, None), fn(logits, target, full))


ALL_PADDING_CASES = [
    ("ce", {}),
    ("dice", {}),
    ("dice", {"smooth": 0.0}),
    ("tversky", {}),
    ("tversky", {"smooth": 0.0}),
    ("focal", {}),
    ("focal", {"gamma": 0.5}),
    ("irm", {}),
]


@pytest.mark.parametrize("name,kwargs", ALL_PADDING_CASES)
def test_all_padding_batch_is_finite_with_zero_grad(name, kwargs):
    logits, target, _ = make_batch(10)
    logits.requires_grad_(True)
    loss = PER_HEAD_LOSSES[name](logits, target, torch.zeros(N, dtype=torch.bool), **kwargs)
    assert loss.shape == (K,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_all_padding_unified_is_finite_with_zero_grad():
    logits, target, _ = make_batch(11)
    logits.requires_grad_(True)
    all_ignored = torch.full_like(target, -100)
    loss = combined(logits, all_ignored, None, LossConfig(PRESETS["unified"], smooth=0.0))
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_gradients_finite_on_confident_logits():
    # p_t rounds to 1 in float32: focal with gamma < 1 must not produce inf * 0.
    logits, target, mask = make_batch(12)
    logits = (F.one_hot(target, C).float() * 200).requires_grad_(True)
    loss = combined(logits, target, mask, LossConfig({"focal": 1.0, "dice": 1.0}, focal_gamma=0.5))
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


# ---- combination and spec ----

def test_unified_combined_equals_weighted_sum():
    logits, target, mask = make_batch(13)
    expected = (
        0.4 * ref_ce(logits, target, mask)
        + 0.2 * ref_dice(logits, target, mask, 1e-6)
        + 0.2 * ref_tversky(logits, target, mask, 0.5, 0.5, 1e-6)
        + 0.2 * ref_focal(logits, target, mask, 2.0)
    )
    got = combined(logits, target, mask, LossConfig.preset("unified"))
    assert got.shape == (K,)
    torch.testing.assert_close(got, expected)


def test_combined_passes_hyper_parameters():
    logits, target, mask = make_batch(14)
    spec = LossConfig({"tversky": 2.0, "focal": 0.5}, tversky_alpha=0.3, tversky_beta=0.7, focal_gamma=1.0)
    expected = 2.0 * ref_tversky(logits, target, mask, 0.3, 0.7, 1e-6) + 0.5 * ref_focal(logits, target, mask, 1.0)
    torch.testing.assert_close(combined(logits, target, mask, spec), expected)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"weights": {"ce": 1.0, "lovasz": 1.0}}, "allowed"),
        ({"weights": {"ce": -0.1, "dice": 1.0}}, ">= 0"),
        ({"weights": {"ce": float("nan")}}, ">= 0"),
        ({"weights": {}}, "> 0"),
        ({"weights": {"ce": 0.0, "dice": 0.0}}, "> 0"),
        ({"weights": {"ce": 1.0}, "tversky_alpha": -1.0}, "tversky_alpha"),
        ({"weights": {"ce": 1.0}, "tversky_beta": -1.0}, "tversky_beta"),
        ({"weights": {"ce": 1.0}, "focal_gamma": -0.5}, "focal_gamma"),
    ],
)
def test_loss_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**kwargs)


def test_presets_are_valid_and_unknown_preset_rejected():
    for name in PRESETS:
        LossConfig.preset(name)
    assert PRESETS["unified"] == {"ce": 0.4, "dice": 0.2, "tversky": 0.2, "focal": 0.2}
    with pytest.raises(ValueError, match="allowed"):
        LossConfig.preset("nope")


def test_spec_owns_its_weights():
    weights = {"ce": 1.0}
    spec = LossConfig(weights)
    weights["bogus"] = 1.0
    assert spec.weights == {"ce": 1.0}


def test_bf16_logits_are_computed_in_float32():
    logits, target, mask = make_batch(15)
    half = logits.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = combined(half, target, mask, LossConfig.preset("unified"))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, combined(half.float(), target, mask, LossConfig.preset("unified")))


def test_shape_errors_are_clear():
    logits, target, mask = make_batch(16)
    with pytest.raises(ValueError, match="mask"):
        cross_entropy(logits, target, mask[:-1])
    with pytest.raises(ValueError, match="target"):
        cross_entropy(logits, target[:, :-1], mask)
