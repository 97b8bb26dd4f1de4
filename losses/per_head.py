"""Per-head token-classification losses, vectorised over all heads at once.

Shapes: ``logits`` (N, K, C), ``target`` (N, K) int64, ``mask`` (N,) bool or None.
N token positions, K heads (one per entity type), C classes per head (O/B/I for the
nested tagger; O/B/I/<pad> under the reference normalisation). A position counts for head k
when ``mask[n]`` is True and ``target[n, k] != -100``. Every loss returns a float32 tensor of shape (K,).

``irm`` is the IRMv1 penalty the reference system added to its cross-entropy; it is no loss on its own
(a penalty in ``LOSSES``), so a loss spec needs another term beside it.

Masked positions are neutralised *before* any arithmetic (their logits are set to 0
and their targets to class 0), so garbage there (inf, NaN, out-of-range labels) can
neither change a loss nor leak NaN into a gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, make_dataclass
from typing import Callable, Optional

import torch
from torch import Tensor
from torch.nn import functional as F

IGNORE_INDEX = -100


def _prepare(
    logits: Tensor, target: Tensor, mask: Optional[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Return (float32 logits, safe target, float weights (N, K)) with masked spots neutralised."""
    if logits.dim() != 3 or target.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (N, K, C) and target (N, K); got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    valid = target != IGNORE_INDEX
    if mask is not None:
        if mask.shape != logits.shape[:1]:
            raise ValueError(f"expected mask (N,)={tuple(logits.shape[:1])}; got {tuple(mask.shape)}")
        valid = valid & mask.to(torch.bool)[:, None]
    # float32 even under bf16 autocast: softmax sums over few classes but many positions.
    logits = torch.where(valid[..., None], logits.float(), 0.0)
    target = torch.where(valid, target, 0)
    return logits, target, valid.float()


def _masked_mean(values: Tensor, weight: Tensor) -> Tensor:
    """Mean over positions per head; a head with no valid position gets 0, not 0/0."""
    return (values * weight).sum(0) / weight.sum(0).clamp_min(1.0)


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den, defined as 1 (zero loss) where den == 0, with NaN-free gradients."""
    nonzero = den > 0
    return torch.where(nonzero, num / torch.where(nonzero, den, 1.0), 1.0)


def _confusion(
    logits: Tensor, target: Tensor, mask: Optional[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft TP, FP, FN per (head, class), each (K, C), summed over valid positions."""
    logits, target, weight = _prepare(logits, target, mask)
    prob = logits.softmax(-1) * weight[..., None]
    onehot = F.one_hot(target, logits.shape[-1]).float() * weight[..., None]
    tp = (prob * onehot).sum(0)
    fp = (prob * (1.0 - onehot)).sum(0)
    fn = ((1.0 - prob) * onehot).sum(0)
    return tp, fp, fn


def cross_entropy(logits: Tensor, target: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Masked mean cross-entropy per head."""
    logits, target, weight = _prepare(logits, target, mask)
    nll = -logits.log_softmax(-1).gather(-1, target[..., None]).squeeze(-1)
    return _masked_mean(nll, weight)


def dice(
    logits: Tensor, target: Tensor, mask: Optional[Tensor], smooth: float = 1e-6
) -> Tensor:
    """Soft Dice loss per head, averaged over all classes."""
    tp, fp, fn = _confusion(logits, target, mask)
    return (1.0 - _safe_ratio(2.0 * tp + smooth, 2.0 * tp + fp + fn + smooth)).mean(-1)


def tversky(
    logits: Tensor,
    target: Tensor,
    mask: Optional[Tensor],
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 1e-6,
) -> Tensor:
    """Tversky loss per head (alpha weighs FP, beta weighs FN), averaged over all classes."""
    tp, fp, fn = _confusion(logits, target, mask)
    return (1.0 - _safe_ratio(tp + smooth, tp + alpha * fp + beta * fn + smooth)).mean(-1)


def focal(
    logits: Tensor, target: Tensor, mask: Optional[Tensor], gamma: float = 2.0
) -> Tensor:
    """Masked mean focal loss per head: -(1 - p_t)^gamma * log p_t."""
    logits, target, weight = _prepare(logits, target, mask)
    log_pt = logits.log_softmax(-1).gather(-1, target[..., None]).squeeze(-1)
    # expm1 keeps 1 - p_t accurate near p_t = 1; the floor keeps d/dx x^gamma finite for gamma < 1.
    one_minus_pt = (-torch.expm1(log_pt)).clamp_min(torch.finfo(torch.float32).tiny)
    return _masked_mean(-one_minus_pt.pow(gamma) * log_pt, weight)


def irm(logits: Tensor, target: Tensor, mask: Optional[Tensor]) -> Tensor:
    """IRMv1 penalty per head (Arjovsky et al. 2019), as the reference system applied it.

    The reference multiplies the logits by a scalar ``s = 1.0`` that requires grad, takes the mean
    cross-entropy ``L1`` over the even-indexed and ``L2`` over the odd-indexed positions of the flattened
    batch, and returns (dL1/ds)(dL2/ds) kept in the graph. Our reading, per head: the reference called its
    loss once per head on that head's (positions, classes) logits, so each head gets its own ``s`` and
    its own penalty, and the penalty is part of that head's task loss (and so of the variance penalty).
    "Even/odd" counts the positions that enter this head's loss: the valid ones (mask and target != -100)
    in the masked default, every padded position under the reference normalisation (where all are valid).

    dCE(s z, y)/ds at s = 1 is E_p[z] - z_y with p = softmax(z): computed in closed form here, which is
    the same value and the same graph as autograd with ``create_graph=True`` at a fraction of the cost.
    A half with no position contributes a zero gradient (the reference would give NaN).
    """
    logits, target, weight = _prepare(logits, target, mask)
    z_y = logits.gather(-1, target[..., None]).squeeze(-1)  # (N, K)
    dce_ds = (logits.softmax(-1) * logits).sum(-1) - z_y  # (N, K): d CE_n(s z) / ds at s = 1
    valid = weight > 0
    rank = valid.long().cumsum(0) - 1  # (N, K): index of a position among its head's valid positions
    even = (valid & (rank % 2 == 0)).float()
    odd = weight - even
    return _masked_mean(dce_ds, even) * _masked_mean(dce_ds, odd)


PerHeadLoss = Callable[..., Tensor]


@dataclass(frozen=True)
class Loss:
    """A registered per-head loss: its function, its settings (keyword -> default; a run spec's ``loss``
    section and a study's search name each ``<loss>_<keyword>``, e.g. ``focal_gamma``), whether it takes
    the shared ``smooth`` term, and whether it is a penalty (no loss on its own)."""

    fn: PerHeadLoss
    settings: dict[str, float] = field(default_factory=dict)
    smoothed: bool = False
    penalty: bool = False


# Adding a loss is one entry here: LossConfig, a run spec's loss keys and a study's search axes follow.
LOSSES: dict[str, Loss] = {
    "ce": Loss(cross_entropy),
    "dice": Loss(dice, smoothed=True),
    "tversky": Loss(tversky, {"alpha": 0.5, "beta": 0.5}, smoothed=True),
    "focal": Loss(focal, {"gamma": 2.0}),
    # the reference's IRMv1 has no setting besides its weight (s = 1, two halves); it needs another loss beside it
    "irm": Loss(irm, penalty=True),
}
PER_HEAD_LOSSES: dict[str, PerHeadLoss] = {name: loss.fn for name, loss in LOSSES.items()}
PENALTIES = tuple(name for name, loss in LOSSES.items() if loss.penalty)  # terms that are no loss on their own
SETTINGS: dict[str, float] = {f"{name}_{key}": default for name, loss in LOSSES.items()
                              for key, default in loss.settings.items()}  # tversky_alpha: 0.5, ...

PRESETS: dict[str, dict[str, float]] = {
    "ce": {"ce": 1.0},
    "dice": {"dice": 1.0},
    "tversky": {"tversky": 1.0},
    "focal": {"focal": 1.0},
    # nerlab's "unified" loss: the reference's without its IRM term; with alpha = beta = 0.5 Tversky equals Dice.
    "unified": {"ce": 0.4, "dice": 0.2, "tversky": 0.2, "focal": 0.2},
    # The reference system's exact unified loss: 0.4 (CE + 5 IRM) + 0.2 Dice + 0.2 Tversky + 0.2 Focal.
    "unified-seed": {"ce": 0.4, "irm": 2.0, "dice": 0.2, "tversky": 0.2, "focal": 0.2},
}


def preset(name: str, noun: str = "loss preset") -> dict[str, float]:
    """The weights of the preset ``name`` (a copy); a ValueError names the presets there are."""
    if name not in PRESETS:
        raise ValueError(f"unknown {noun} {name!r} (allowed: {', '.join(PRESETS)})")
    return dict(PRESETS[name])


# Every loss setting as a keyword-only field (tversky_alpha, ...), shared by LossConfig and a run spec's loss.
LossSettings = make_dataclass("LossSettings", [(k, float, field(default=v)) for k, v in SETTINGS.items()],
                              frozen=True, kw_only=True)


@dataclass(frozen=True)
class LossConfig(LossSettings):
    """Which per-head losses to sum, with what weights and settings."""

    weights: dict[str, float] = field(default_factory=lambda: preset("ce"))
    smooth: float = 1e-6

    def __post_init__(self) -> None:
        # Own a copy, so a caller mutating its dict later cannot bypass validation.
        object.__setattr__(self, "weights", dict(self.weights))
        self.validate()

    @classmethod
    def preset(cls, name: str, **kwargs: float) -> "LossConfig":
        return cls(weights=preset(name), **kwargs)

    def validate(self) -> None:
        unknown = sorted(set(self.weights) - set(LOSSES))
        if unknown:
            raise ValueError(f"unknown loss name(s) {unknown}; allowed: {sorted(LOSSES)}")
        bad = {k: w for k, w in self.weights.items() if not math.isfinite(w) or w < 0}
        if bad:
            raise ValueError(f"loss weights must be finite and >= 0; got {bad}")
        if not any(w > 0 for k, w in self.weights.items() if k not in PENALTIES):
            raise ValueError(f"at least one loss weight must be > 0 besides the {'/'.join(PENALTIES)} penalty; "
                             f"got {self.weights}")
        for name in (*SETTINGS, "smooth"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0; got {value}")

    def kwargs(self, name: str) -> dict[str, float]:
        """Settings that the loss called ``name`` takes."""
        loss = LOSSES[name]
        return {**{key: getattr(self, f"{name}_{key}") for key in loss.settings},
                **({"smooth": self.smooth} if loss.smoothed else {})}


def combined(
    logits: Tensor, target: Tensor, mask: Optional[Tensor], spec: LossConfig
) -> Tensor:
    """Weighted sum of the losses named in ``spec``, per head: shape (K,)."""
    terms = [
        weight * PER_HEAD_LOSSES[name](logits, target, mask, **spec.kwargs(name))
        for name, weight in spec.weights.items()
        if weight > 0  # zero-weight terms are skipped, not computed
    ]
    return torch.stack(terms).sum(0)
