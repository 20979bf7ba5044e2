"""3D ResNet classifier whose parameter names match MedicalNet, so its pretrained `.pth` files load.

Layout (names are the state-dict keys MedicalNet uses):

    conv1 (7x7x7, stride 2, pad 3, no bias) -> bn1 -> relu -> maxpool (3, stride 2, pad 1)
    layer1 (stride 1) -> layer2 (stride 2) -> layer3 (stride 2) -> layer4 (stride 2)
    avgpool (adaptive, 1x1x1) -> fc (Linear)

Blocks are ``layerK.N.conv1/bn1/conv2/bn2`` (basic, depth 10/18/34) or ``.../conv3/bn3`` (bottleneck,
depth 50). The first block of a stage that changes shape gets a ``downsample`` shortcut: shortcut "B" is
``downsample.0`` (1x1x1 Conv3d) + ``downsample.1`` (norm); shortcut "A" has no parameters (strided identity,
zero-padded channels). MedicalNet's released weights use B for resnet-10 and resnet-50 and A for resnet-18
and resnet-34; `resnet3d`'s default (shortcut=None) picks the matching one for the depth.

MedicalNet replaces the strides of layer3/layer4 with dilation (for its segmentation head); weight shapes
are the same either way, and a classifier wants the standard strides, so we use them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from nbtools.models.init import init_weights

NormLayer = Callable[[int], nn.Module]

# depth -> (block type, blocks per stage); identical to MedicalNet / torchvision.
_DEPTHS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
           50: ("bottleneck", (3, 4, 6, 3))}  # fmt: skip
_SHORTCUTS = ("A", "B")
MEDICALNET_SHORTCUT = {10: "B", 18: "A", 34: "A", 50: "B"}  # from the MedicalNet README
_BASE_WIDTHS = (64, 128, 256, 512)
# Below 16 voxels a side is down to 1 voxel before layer3 (total stride 32): the net would run but see
# next to nothing, which almost always means a wrong axis order or a forgotten resize.
MIN_SIZE = 16


def _conv3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Parameter-free shortcut "A": subsample by `stride`, then zero-pad channels up to `out_channels`.

    x: (B, C, D, H, W) -> (B, out_channels, ceil(D/s), ceil(H/s), ceil(W/s)). Gradients flow through the
    kept channels (no ``.data`` detour, unlike MedicalNet's original, which cut them).
    """

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        if s > 1:
            x = x[:, :, ::s, ::s, ::s]
        # F.pad's last pair addresses dim 1 (channels): pad only after the existing ones.
        return F.pad(x, (0, 0, 0, 0, 0, 0, 0, self.out_channels - x.shape[1]))

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, stride={self.stride}"


class BasicBlock3d(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, downsample: nn.Module | None, norm: NormLayer):
        super().__init__()
        self.conv1 = _conv3(in_ch, planes, stride)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3(planes, planes)
        self.bn2 = norm(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck3d(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, downsample: nn.Module | None, norm: NormLayer):
        super().__init__()
        # Stride on the 3x3x3 conv (conv2), as MedicalNet and torchvision v1.5 do.
        self.conv1 = _conv1(in_ch, planes)
        self.bn1 = norm(planes)
        self.conv2 = _conv3(planes, planes, stride)
        self.bn2 = norm(planes)
        self.conv3 = _conv1(planes, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_layer(
    block: type[nn.Module], in_ch: int, planes: int, n: int, stride: int, shortcut: str, norm: NormLayer
) -> tuple[nn.Sequential, int]:
    """Stage of `n` blocks; the first one strides and, if the shape changes, gets the shortcut."""
    out_ch = planes * block.expansion
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = (
            PadShortcut(out_ch, stride)
            if shortcut == "A"
            else nn.Sequential(_conv1(in_ch, out_ch, stride), norm(out_ch))
        )
    layers = [block(in_ch, planes, stride, downsample, norm)]
    layers += [block(out_ch, planes, 1, None, norm) for _ in range(1, n)]
    return nn.Sequential(*layers), out_ch


class ResNet3D(nn.Module):
    """3D ResNet classifier. Build it with `resnet3d`; see that function for the arguments.

    forward: x (B, in_channels, D, H, W) float, every spatial dim >= 16 -> logits (B, num_classes).
    """

    def __init__(
        self,
        depth: int,
        in_channels: int,
        num_classes: int,
        dropout: float,
        shortcut: str,
        width: float,
        norm_layer: NormLayer,
        zero_init_residual: bool,
    ) -> None:
        super().__init__()
        kind, blocks = _DEPTHS[depth]
        block = BasicBlock3d if kind == "basic" else Bottleneck3d
        widths = [max(8, round(c * width)) for c in _BASE_WIDTHS]
        # Plain attributes for reports and error messages; forward never changes them.
        self.depth, self.shortcut, self.width, self.in_channels = depth, shortcut, width, in_channels

        self.conv1 = nn.Conv3d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        c = widths[0]
        self.layer1, c = _make_layer(block, c, widths[0], blocks[0], 1, shortcut, norm_layer)
        self.layer2, c = _make_layer(block, c, widths[1], blocks[1], 2, shortcut, norm_layer)
        self.layer3, c = _make_layer(block, c, widths[2], blocks[2], 2, shortcut, norm_layer)
        self.layer4, c = _make_layer(block, c, widths[3], blocks[3], 2, shortcut, norm_layer)
        # One dropout per stage: after layer1-3 on the feature map, and the fourth on the pooled layer4
        # features right before fc (dropping before the average would only add noise to the mean).
        self.drop1, self.drop2, self.drop3, self.drop4 = (
            nn.Dropout(dropout) if dropout > 0 else nn.Identity() for _ in range(4)
        )
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.num_features = c
        self.fc = nn.Linear(c, num_classes)

        init_weights(self)
        if zero_init_residual:
            # Each block then starts as the identity (Goyal et al. 2017), as torchvision offers.
            for m in self.modules():
                if isinstance(m, (BasicBlock3d, Bottleneck3d)):
                    last = m.bn3 if isinstance(m, Bottleneck3d) else m.bn2
                    if getattr(last, "weight", None) is not None:
                        nn.init.zeros_(last.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, D, H, W) -> pooled layer4 features (B, num_features), before dropout/fc."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"resnet3d expects input of shape (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}; "
                "add the channel axis with x.unsqueeze(1), or build the model with the matching in_channels"
            )
        if min(x.shape[2:]) < MIN_SIZE:
            raise ValueError(
                f"resnet3d needs every spatial dim >= {MIN_SIZE} (total stride is 32), got input shape "
                f"{tuple(x.shape)}; pad or resize the volume to at least {MIN_SIZE}^3"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.drop1(self.layer1(x))
        x = self.drop2(self.layer2(x))
        x = self.drop3(self.layer3(x))
        x = self.layer4(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop4(self.forward_features(x)))


def resnet3d(
    depth: int = 18,
    in_channels: int = 1,
    num_classes: int = 2,
    dropout: float = 0.0,
    shortcut: str | None = None,
    width: float = 1.0,
    norm_layer: NormLayer | None = None,
    zero_init_residual: bool = False,
) -> ResNet3D:
    """Build a 3D ResNet-{10,18,34,50} classifier with MedicalNet-compatible parameter names.

    Args:
        depth: 10, 18, 34 (basic blocks) or 50 (bottleneck blocks).
        in_channels: channels of the input volume (1 for CT/MRI; MedicalNet weights expect 1).
        num_classes: outputs of the ``fc`` head (use 1 with a sigmoid/focal loss, 2+ with cross-entropy).
        dropout: p of the ``nn.Dropout`` after each of layer1-3 and on the pooled features before ``fc``;
            0 puts ``nn.Identity`` there instead.
        shortcut: "B" (1x1x1 conv + norm projection) or "A" (parameter-free, zero-padded identity).
            None (default) picks what MedicalNet released for this depth (B for 10/50, A for 18/34), so
            ``load_pretrained(resnet3d(depth=18), "resnet_18.pth")`` finds every backbone tensor.
        width: multiplies the stage widths 64/128/256/512 (each at least 8). Below 1 for light CPU tests and
            demos; pretrained weights only fit width=1.
        norm_layer: ``callable(num_channels) -> nn.Module`` used for bn1, every block and every downsample;
            default ``nn.BatchNorm3d``. E.g. ``lambda c: nn.GroupNorm(8, c)`` for batch size 1-2 on a GPU.
        zero_init_residual: start each block's last norm weight at 0, so every block begins as identity.

    Init: `init_weights` (Kaiming-normal fan_out/ReLU for convs, std 1/sqrt(fan_in) for fc so the first
    logits are O(1), norms weight 1 / bias 0). Size at width 1, 2 classes, with the shortcut MedicalNet
    released: ResNet-10-3D (B) 14.36 M parameters, ResNet-18 (A) 32.99 M, ResNet-34 (A) 63.30 M,
    ResNet-50 (B) 46.16 M (MedicalNet's README lists 14.36 / 32.99 / 63.31 / 46.21 M).

    Input: (B, in_channels, D, H, W) float with D, H, W >= 16 (smaller raises ValueError); any larger size
    works since the pool is adaptive. Output: logits (B, num_classes).

    >>> m = resnet3d(depth=10, width=0.25)
    >>> m(torch.zeros(2, 1, 32, 32, 32)).shape
    torch.Size([2, 2])
    """
    if depth not in _DEPTHS:
        raise ValueError(f"depth must be one of {sorted(_DEPTHS)}, got {depth!r}")
    if shortcut is None:
        shortcut = MEDICALNET_SHORTCUT[depth]
    if shortcut not in _SHORTCUTS:
        raise ValueError(
            f"shortcut must be one of {_SHORTCUTS} (MedicalNet: B for 10/50, A for 18/34), got {shortcut!r}"
        )
    if not (isinstance(in_channels, int) and in_channels >= 1):
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if not width > 0:
        raise ValueError(
            f"width must be > 0 (1.0 for pretrained weights, e.g. 0.25 for CPU demos), got {width!r}"
        )
    if norm_layer is not None and not callable(norm_layer):
        raise ValueError(f"norm_layer must be a callable num_channels -> nn.Module, got {norm_layer!r}")
    norm = nn.BatchNorm3d if norm_layer is None else norm_layer
    return ResNet3D(
        depth, in_channels, num_classes, float(dropout), shortcut, float(width), norm, zero_init_residual
    )
