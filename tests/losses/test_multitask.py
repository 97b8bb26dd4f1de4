"""Variance-penalised multi-task loss against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from nerlab.losses import multitask_loss


def test_equal_losses_have_zero_penalty():
    total, term = multitask_loss(torch.full((21,), 0.7), penalty=5.0)
    assert term.item() == pytest.approx(0.0, abs=1e-10)  # float32 mean of 0.7s is not exactly 0.7
    assert total.item() == pytest.approx(21 * 0.7)
    assert multitask_loss(torch.full((4,), 0.5), penalty=5.0)[1].item() == 0.0


def test_hand_computed_value():
    # mean = 3, deviations -2, -1, 0, 3 -> squares 4, 1, 0, 9 -> var = 14 / 4 = 3.5
    # total = (1 + 2 + 3 + 6) + 5 * 3.5 = 12 + 17.5 = 29.5
    total, term = multitask_loss(torch.tensor([1.0, 2.0, 3.0, 6.0]), penalty=5.0)
    assert term.item() == pytest.approx(17.5)
    assert total.item() == pytest.approx(29.5)


def test_gradient_matches_hand_derivative():
    # d total / d L_k = 1 + lambda * 2 (L_k - mean) / K = 1 + 2.5 * deviation
    losses = torch.tensor([1.0, 2.0, 3.0, 6.0], requires_grad=True)
    multitask_loss(losses, penalty=5.0)[0].backward()
    torch.testing.assert_close(losses.grad, torch.tensor([-4.0, -1.5, 1.0, 8.5]))


def test_zero_penalty_is_plain_sum():
    losses = torch.tensor([0.1, 2.0, 0.3])
    total, term = multitask_loss(losses, penalty=0.0)
    assert term.item() == 0.0 and total.item() == pytest.approx(2.4)


def test_groups_are_concatenated_into_one_set_of_tasks():
    g = torch.Generator().manual_seed(0)
    type_heads, flat_head = torch.rand(21, generator=g), torch.rand(1, generator=g)
    joined = torch.cat([type_heads, flat_head])
    expected_var = sum((v - joined.mean().item()) ** 2 for v in joined.tolist()) / 22
    total, term = multitask_loss([type_heads, flat_head], penalty=5.0)
    assert term.item() == pytest.approx(5.0 * expected_var)
    assert total.item() == pytest.approx(joined.sum().item() + 5.0 * expected_var)
    torch.testing.assert_close(total, multitask_loss(joined, penalty=5.0)[0])


def test_single_task_has_no_penalty():
    total, term = multitask_loss(torch.tensor([2.5]), penalty=5.0)
    assert term.item() == 0.0 and total.item() == 2.5


@pytest.mark.parametrize("penalty", [-1.0, float("nan")])
def test_invalid_penalty_raises(penalty):
    with pytest.raises(ValueError, match="penalty"):
        multitask_loss(torch.tensor([1.0, 2.0]), penalty=penalty)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        multitask_loss(torch.zeros(0), penalty=1.0)
    with pytest.raises(ValueError):
        multitask_loss(torch.zeros(2, 3), penalty=1.0)
