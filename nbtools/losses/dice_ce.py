"""Dice + cross-entropy for segmentation (nnU-Net's and MONAI's default loss), with focal and log-cosh
Dice variants, as a named ComboLoss so each part can be logged."""

from __future__ import annotations

import math
from collections.abc import Sequence

from nbtools.losses.combine import ComboLoss
from nbtools.losses.dice import DiceLoss, LogCoshDiceLoss
from nbtools.losses.focal import FocalLoss


class DiceCELoss(ComboLoss):
    """dice_weight * (1 - soft Dice) + ce_weight * cross-entropy, both on the same logits.

    logits: (B, C, ...) float, softmax over C (C == 1: one sigmoid foreground channel, binary
    cross-entropy); targets: an integer class map (B, ...) (0/1 when C == 1). Everything in float32,
    in log space: finite at any logit, also under bf16/fp16 autocast.

    smooth: added to the Dice's numerator and denominator (1e-5, as MONAI and nnU-Net; the Dice of a
        patch with no foreground then rewards predicting none). Dice per sample and class, averaged.
    include_background: False (default, nnU-Net) leaves class 0 out of the Dice; the cross-entropy
        always covers every class.
    log_cosh: log(cosh(Dice loss)) instead of the Dice loss (Jadon 2020), overflow-free.
    gamma: 0 is cross-entropy; > 0 makes it focal loss (Lin et al. 2017) with that gamma.
    alpha: per-class weights of the cross-entropy/focal term (one per class), or None.

    Parts (`parts()`, `with_terms()`) are named "dice" or "log_cosh_dice", and "ce" or
    "focal". Wrap it for deep supervision: ``DeepSupervisionLoss(DiceCELoss(), weights="nnunet")``.

    Agrees with ``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True, include_background=False,
    smooth_nr=1e-5, smooth_dr=1e-5)`` on (B, C, ...) logits and (B, 1, ...) labels (a test). Differences
    from MONAI's defaults: MONAI includes the background in the Dice unless told not to; for C == 1 it
    needs ``sigmoid=True`` and float targets, where this takes the same call as for C > 1.

    >>> loss = DiceCELoss()
    >>> loss(torch.randn(2, 3, 16, 16, 16), torch.randint(0, 3, (2, 16, 16, 16))).shape
    torch.Size([])
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        smooth: float = 1e-5,
        include_background: bool = False,
        log_cosh: bool = False,
        gamma: float = 0.0,
        alpha: Sequence[float] | None = None,
    ) -> None:
        if alpha is not None and isinstance(alpha, (int, float)):
            raise ValueError(
                f"DiceCELoss: alpha must be one weight per class (a list), or None, got {alpha!r}; "
                "a single positive-class weight belongs to FocalLoss on one-channel logits"
            )
        dice_cls = LogCoshDiceLoss if log_cosh else DiceLoss
        dice = dice_cls(smooth=smooth, include_background=include_background)
        ce = FocalLoss(gamma=gamma, alpha=alpha)
        dice_name = "log_cosh_dice" if log_cosh else "dice"
        ce_name = "focal" if isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0 else "ce"
        super().__init__({dice_name: (dice, dice_weight), ce_name: (ce, ce_weight)})
