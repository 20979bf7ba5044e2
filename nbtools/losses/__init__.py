"""Losses on logits that cannot overflow: float32, log space, at any logit, in fp32 and under AMP."""

from nbtools.losses.combine import ComboLoss, DeepSupervisionLoss, main_output
from nbtools.losses.dice import DiceLoss, LogCoshDiceLoss, log_cosh
from nbtools.losses.focal import FocalLoss
from nbtools.losses.ldam import LDAMLoss

__all__ = [
    "ComboLoss",
    "DeepSupervisionLoss",
    "DiceLoss",
    "FocalLoss",
    "LDAMLoss",
    "LogCoshDiceLoss",
    "log_cosh",
    "main_output",
]
