"""Multi-task loss with a variance penalty that keeps per-task losses balanced."""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor


def multitask_loss(
    task_losses: Union[Tensor, Sequence[Tensor]], penalty: float
) -> tuple[Tensor, Tensor]:
    """Return ``(total, penalty_term)`` with total = sum_k L_k + penalty * Var(L).

    ``Var`` is the population variance (divide by K). ``task_losses`` is a (K,) tensor, or
    a sequence of tensors (e.g. 21 type heads and 1 flat head) that are concatenated, so
    every head of every group is one task. ``penalty_term`` is ``penalty * Var(L)``,
    returned separately for logging.
    """
    if not math.isfinite(penalty) or penalty < 0:
        raise ValueError(f"variance penalty must be finite and >= 0; got {penalty}")
    if not isinstance(task_losses, Tensor):
        task_losses = torch.cat([t.reshape(-1) for t in task_losses])
    if task_losses.dim() != 1 or task_losses.numel() == 0:
        raise ValueError(f"expected a non-empty (K,) tensor of task losses; got {tuple(task_losses.shape)}")
    variance = (task_losses - task_losses.mean()).square().mean()
    penalty_term = penalty * variance
    return task_losses.sum() + penalty_term, penalty_term
