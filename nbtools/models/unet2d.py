"""`unet2d`: a U-Net on a torchvision ResNet encoder, for 2D segmentation; ImageNet weights load into
the encoder the way `resnet2d_attention` loads its backbone."""

from __future__ import annotations

import os

import torchvision.models as tvm
from torch import nn

from nbtools.models.imagenet import WEIGHTS, load_backbone_weights
from nbtools.models.unet import ResNetEncoder, UNet
from nbtools.models.unet3d import check_deep_supervision

BACKBONES = tuple(WEIGHTS)


def unet2d(
    backbone: str = "resnet18",
    num_classes: int = 2,
    weights: str | os.PathLike | None = None,
    deep_supervision: int = 3,
    width: float = 1.0,
    verbose: bool = True,
) -> UNet:
    """A 2D U-Net on torchvision's `backbone`: (B, 3, H, W) -> (B, num_classes, H, W) logits.

    Args:
        backbone: "resnet18", "resnet34" or "resnet50".
        num_classes: output channels, background included (softmax over them).
        weights: None (random init), "imagenet" (torchvision's IMAGENET1K_V1 from torch.hub's cache or
            downloaded; offline a RuntimeError says which file to copy where), or a path to such a state
            dict. Loaded into ``model.encoder`` with `load_pretrained`; the report is kept as
            ``model.load_report`` (torchvision's ``fc.*`` shows as unexpected and ignored).
        deep_supervision: auxiliary heads, 0-4, at 1/2, 1/4, 1/8, 1/16 of the input size.
        width: multiplies the decoder's channels (256/128/64/32/16, each at least 8); the encoder is
            torchvision's as it is.
        verbose: print the load report (logged at INFO otherwise).

    Input: ImageNet-normalised (B, 3, H, W), H and W multiples of 32 (else a ValueError naming the
    shape). Train mode returns [main, aux1, ...] (a tensor when deep_supervision=0), eval mode main.

    >>> model = unet2d("resnet18", num_classes=2, weights="imagenet")   # doctest: +SKIP
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(map(repr, BACKBONES))}, got {backbone!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be an int >= 1 (2 for one structure and background), got {num_classes!r}"
        )
    check_deep_supervision(deep_supervision)
    if not width > 0:
        raise ValueError(f"width must be > 0 (1.0 is the default decoder), got {width!r}")
    model = UNet(
        ResNetEncoder(getattr(tvm, backbone)(weights=None)),
        num_classes,
        deep_supervision,
        float(width),
        nn.BatchNorm2d,
    )
    if weights is not None:
        model.load_report = load_backbone_weights(model.encoder, backbone, weights, verbose)
    return model
