"""Losses on logits that cannot overflow: float32, log space, at any logit, in fp32 and under AMP."""

from nbtools.losses.combine import (
    DEEP_SUPERVISION_PRESETS,
    ComboLoss,
    DeepSupervisionLoss,
    deep_supervision_weights,
    main_output,
)
from nbtools.losses.dice import DiceLoss, LogCoshDiceLoss, log_cosh
from nbtools.losses.dice_ce import DiceCELoss
from nbtools.losses.focal import FocalLoss
from nbtools.losses.ldam import LDAMLoss
from nbtools.losses.multitask import MultiTaskLoss

__all__ = [
    "DEEP_SUPERVISION_PRESETS",
    "ComboLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "LDAMLoss",
    "LogCoshDiceLoss",
    "MultiTaskLoss",
    "deep_supervision_weights",
    "log_cosh",
    "main_output",
]
