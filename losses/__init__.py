"""Per-head token losses and the multi-task variance penalty (torch only)."""

from .multitask import multitask_loss
from .per_head import (
    IGNORE_INDEX,
    LOSSES,
    PENALTIES,
    PER_HEAD_LOSSES,
    PRESETS,
    SETTINGS,
    LossConfig,
    LossSettings,
    combined,
    cross_entropy,
    dice,
    focal,
    irm,
    preset,
    tversky,
)

__all__ = [
    "IGNORE_INDEX",
    "LOSSES",
    "PENALTIES",
    "PER_HEAD_LOSSES",
    "PRESETS",
    "SETTINGS",
    "LossConfig",
    "LossSettings",
    "combined",
    "cross_entropy",
    "dice",
    "focal",
    "irm",
    "multitask_loss",
    "preset",
    "tversky",
]
