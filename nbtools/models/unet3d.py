"""`unet3d`: a U-Net on our MedicalNet-compatible `resnet3d` encoder, for 3D segmentation.

MedicalNet was trained for segmentation; its released `.pth` files load into the encoder with the same
load report as `resnet3d` (`weights=` here, or `load_pretrained(model.encoder, path)`).
"""

from __future__ import annotations

import os

from torch import nn

from nbtools.models.pretrained import load_pretrained
from nbtools.models.resnet3d import NormLayer, resnet3d
from nbtools.models.unet import MAX_DEEP_SUPERVISION, ResNetEncoder, UNet


def check_deep_supervision(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DEEP_SUPERVISION:
        raise ValueError(
            f"deep_supervision must be an int from 0 (main output only) to {MAX_DEEP_SUPERVISION} "
            f"(aux heads at 1/2, 1/4, 1/8, 1/16 resolution), got {value!r}"
        )
    return value


def unet3d(
    depth: int = 18,
    in_channels: int = 1,
    num_classes: int = 2,
    width: float = 1.0,
    deep_supervision: int = 3,
    weights: str | os.PathLike | None = None,
    norm_layer: NormLayer | None = None,
    shortcut: str | None = None,
    verbose: bool = True,
) -> UNet:
    """A 3D U-Net whose encoder is `resnet3d(depth, in_channels, width=width, shortcut=shortcut)`.

    Args:
        depth: 10, 18, 34 or 50, as `resnet3d` (MedicalNet's depths).
        in_channels: channels of the input volume (1 for CT/MRI; MedicalNet weights expect 1).
        num_classes: output channels, background included (2 for one structure; softmax over them).
        width: multiplies every channel count, encoder (64/128/256/512) and decoder (256/128/64/32/16),
            each at least 8. 1.0 for MedicalNet weights; 0.25 or less keeps CPU demos and tests light.
        deep_supervision: number of auxiliary heads, 0-4, at 1/2, 1/4, 1/8, 1/16 of the input size.
        weights: None, or a MedicalNet `.pth` (or any state dict with resnet3d keys) loaded into the
            encoder with `load_pretrained`; the report is kept as ``model.load_report`` (MedicalNet's own
            ``conv_seg.*`` head shows as unexpected and ignored).
        norm_layer: ``callable(channels) -> nn.Module`` for the encoder and the decoder; default
            BatchNorm3d (e.g. ``lambda c: nn.GroupNorm(8, c)`` for batch size 1-2).
        shortcut: "A" or "B"; None picks what MedicalNet released for the depth (see `resnet3d`).
        verbose: print the load report (logged at INFO otherwise).

    Input (B, in_channels, D, H, W) with D, H, W multiples of 32 (else a ValueError naming the shape
    and the sizes to pad to; `sliding_window_predict` handles whole volumes of any size). Output: train
    mode [main, aux1, ...] (a tensor when deep_supervision=0), eval mode main (B, num_classes, D, H, W).

    >>> model = unet3d(depth=18, width=0.25, deep_supervision=3)
    >>> [tuple(o.shape) for o in model(torch.zeros(2, 1, 32, 32, 32))]  # train mode
    [(2, 2, 32, 32, 32), (2, 2, 16, 16, 16), (2, 2, 8, 8, 8), (2, 2, 4, 4, 4)]
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be an int >= 1 (2 for one structure and background), got {num_classes!r}"
        )
    check_deep_supervision(deep_supervision)
    resnet = resnet3d(
        depth, in_channels, num_classes=1, shortcut=shortcut, width=width, norm_layer=norm_layer
    )
    norm = nn.BatchNorm3d if norm_layer is None else norm_layer
    model = UNet(ResNetEncoder(resnet), num_classes, deep_supervision, float(width), norm)
    if weights is not None:
        model.load_report = load_pretrained(model.encoder, weights, verbose=verbose)
    return model
