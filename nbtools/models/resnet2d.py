"""`resnet2d_attention`: a torchvision ResNet backbone, an attention block and a classifier head, for
fine-tuning on 2D images (e.g. forged-document detection with Focal Loss).

Parameters live under three top-level names, so `TrainConfig.group_lrs` gives each its own learning
rate and `TrainConfig.unfreeze` addresses backbone stages by their torchvision names:

    backbone.conv1 / bn1 / layer1 ... layer4   (keys as in torchvision, minus fc: ImageNet files load as is)
    attention.*                                (SE or CBAM on the last feature map; none for attention=None)
    classifier.fc.*                            (pool -> dropout -> Linear)
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torchvision.models as tvm
from torch import nn

from nbtools.models.attention import ATTENTIONS, attention_block
from nbtools.models.imagenet import WEIGHTS, load_backbone_weights
from nbtools.models.pretrained import LoadReport

BACKBONES = tuple(WEIGHTS)
_BACKBONE_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


class ResNet2dAttention(nn.Module):
    """x: (B, 3, H, W) float (ImageNet-normalised) -> logits (B, num_classes). Build it with
    `resnet2d_attention`. `load_report` holds the LoadReport of the pretrained weights, or None."""

    def __init__(self, backbone: str, num_classes: int, attention: str | None, dropout: float) -> None:
        super().__init__()
        tv = getattr(tvm, backbone)(weights=None)
        self.backbone = nn.Sequential(OrderedDict((name, getattr(tv, name)) for name in _BACKBONE_PARTS))
        self.num_features = tv.fc.in_features  # 512 for resnet18/34, 2048 for resnet50
        self.attention = attention_block(attention, self.num_features)
        self.classifier = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                dropout=nn.Dropout(dropout),
                fc=nn.Linear(self.num_features, num_classes),
            )
        )
        self.load_report: LoadReport | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.attention(self.backbone(x)))


def resnet2d_attention(
    backbone: str = "resnet18",
    num_classes: int = 1,
    weights: str | os.PathLike | None = None,
    attention: str | None = "se",
    dropout: float = 0.0,
    prior: float | Sequence[float] | None = None,
    verbose: bool = True,
) -> ResNet2dAttention:
    """A torchvision ResNet with an attention block and a classifier: (B, 3, H, W) -> (B, num_classes) logits.

    backbone: "resnet18", "resnet34" or "resnet50".
    num_classes: 1 for a binary task with sigmoid/Focal Loss, C > 1 for softmax over C classes.
    weights: None (random init); "imagenet" (torchvision's IMAGENET1K_V1, from torch.hub's cache or
        downloaded; offline this raises a RuntimeError saying which file to copy where); or a path to a
        state dict such as torchvision's ``resnet18-f37072fd.pth``, loaded into the backbone with
        `load_pretrained` (its ``fc.*`` is reported as unexpected and ignored). The report is kept as
        ``model.load_report`` and printed when `verbose` (logged at INFO otherwise), as `load_pretrained` does. To load a whole fine-tuned model, call
        ``load_pretrained(model, "best.pt")`` yourself.
    attention: "se" (Squeeze-and-Excitation), "cbam" (channel + spatial) or None (no block and no
        "attention" parameter group).
    dropout: probability in [0, 1) before the final Linear.
    prior: initialise the classifier so the first predictions match the class balance (RetinaNet,
        Lin et al. 2017), which keeps the first steps of Focal Loss from being spent on learning the
        base rate. num_classes=1: the positive fraction p in (0, 1), bias = log(p / (1 - p)). num_classes
        C > 1: C class fractions, bias = log(p_c). The Linear weights then start at std 0.01, so the
        logits start at the bias.

    >>> model = resnet2d_attention("resnet18", num_classes=1, weights="imagenet", prior=0.3)  # doctest: +SKIP
    >>> model(torch.randn(2, 3, 128, 128)).shape                                              # doctest: +SKIP
    torch.Size([2, 1])
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(map(repr, BACKBONES))}, got {backbone!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1 (1 for binary with sigmoid), got {num_classes!r}")
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    bias = None if prior is None else _prior_bias(prior, num_classes)

    model = ResNet2dAttention(backbone, num_classes, attention, float(dropout))
    if bias is not None:
        fc = model.classifier.fc
        with torch.no_grad():
            nn.init.normal_(fc.weight, std=0.01)
            fc.bias.copy_(bias)
    if weights is not None:
        model.load_report = load_backbone_weights(model.backbone, backbone, weights, verbose)
    return model


def _prior_bias(prior: float | Sequence[float], num_classes: int) -> torch.Tensor:
    if num_classes == 1:
        if isinstance(prior, (Sequence, torch.Tensor)) or not 0.0 < prior < 1.0:
            raise ValueError(
                f"prior for num_classes=1 must be the positive fraction, a float in (0, 1), got {prior!r}"
            )
        return torch.tensor([math.log(prior / (1.0 - prior))])
    p = torch.as_tensor(prior, dtype=torch.float64)
    if p.shape != (num_classes,) or not bool((p > 0).all()):
        raise ValueError(
            f"prior for num_classes={num_classes} must be {num_classes} positive class fractions, got {prior!r}"
        )
    return (p / p.sum()).log().float()
