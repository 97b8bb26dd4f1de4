"""Per-head token losses and the multi-task variance penalty (torch only)."""

from .multitask import multitask_loss
from .per_head import (
    IGNORE_INDEX,
    PENALTIES,
    PER_HEAD_LOSSES,
    PRESETS,
    LossConfig,
    combined,
    cross_entropy,
    dice,
    focal,
    irm,
    tversky,
)

__all__ = [
    "IGNORE_INDEX",
    "PENALTIES",
    "PER_HEAD_LOSSES",
    "PRESETS",
    "LossConfig",
    "combined",
    "cross_entropy",
    "dice",
    "focal",
    "irm",
    "multitask_loss",
    "tversky",
]
