"""The U-Net behind `unet3d` and `unet2d`: a ResNet encoder, a decoder with a skip from every encoder
stage, and a 1x1(x1) head per decoder level for deep supervision, in 2D or 3D.

Parameter names (three groups, by prefix, for `TrainConfig.group_lrs` and `unfreeze`):

    encoder.conv1 / bn1 / layer1 ... layer4   the ResNet's own keys (MedicalNet, torchvision files load)
    decoder.s16 / s8 / s4 / s2 / s1           one block per level, named by its stride (s1: full resolution)
    heads.main (s1), heads.aux1 (s2), heads.aux2 (s4), heads.aux3 (s8), heads.aux4 (s16)

No decoder or head name reuses an encoder name (conv1, bn1, layerN), so `unfreeze={8: "layer2"}` and
`group_lrs={"encoder": ...}` find the encoder only.

Encoder strides: conv1 /2, maxpool + layer1 /4, layer2 /8, layer3 /16, layer4 /32. Each decoder block
doubles the resolution with a stride-2 transposed convolution, concatenates the skip of that resolution
(the stem's output at s2, layerN's at s4-s16, the input itself at s1) and applies two 3x3(x3)
conv-norm-ReLU (nnU-Net's decoder stage). The norm is the encoder's (BatchNorm unless a norm_layer is
given).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from nbtools.models.init import init_weights

STRIDE = 32  # the encoder's total stride: spatial sizes must be multiples of it
LEVELS = ("s16", "s8", "s4", "s2", "s1")  # decoder order, deepest first
DECODER_WIDTHS = (256, 128, 64, 32, 16)  # channels of each level at width 1 (smp's Unet defaults)
MAX_DEEP_SUPERVISION = len(LEVELS) - 1  # aux heads at s2, s4, s8, s16
_ENCODER_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

NormLayer = Callable[[int], nn.Module]


def _out_channels(stage: nn.Module) -> int:
    """Channels a ResNet stage gives out: the last conv of its last block (conv2 basic, conv3 bottleneck;
    a block's downsample comes first in module order and only in the first block)."""
    convs = [m for m in stage.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    return convs[-1].out_channels


class ResNetEncoder(nn.Module):
    """The feature stages of a ResNet (ours in 3D, torchvision's in 2D), without its pool and fc.

    forward: x (B, C_in, *spatial) -> [s2, s4, s8, s16, s32] feature maps; `channels` gives theirs.
    """

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        for name in _ENCODER_PARTS:  # the same attribute names, so the state-dict keys stay the ResNet's
            setattr(self, name, getattr(resnet, name))
        self.in_channels = self.conv1.in_channels
        self.channels = [self.conv1.out_channels] + [
            _out_channels(getattr(self, f"layer{i}")) for i in range(1, 5)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s2 = self.relu(self.bn1(self.conv1(x)))
        s4 = self.layer1(self.maxpool(s2))
        s8 = self.layer2(s4)
        s16 = self.layer3(s8)
        return [s2, s4, s8, s16, self.layer4(s16)]


class DecoderBlock(nn.Module):
    """Up x2 (transposed conv), concatenate the skip, two conv-norm-ReLU:
    (B, in_ch, *s) and a skip (B, skip_ch, *2s) -> (B, out_ch, *2s)."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, dims: int, norm: NormLayer) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        up = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
        self.up = up(in_ch, out_ch, kernel_size=2, stride=2)
        self.conv_a = conv(out_ch + skip_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.norm_a = norm(out_ch)
        self.conv_b = conv(out_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.norm_b = norm(out_ch)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.up(x), skip], dim=1)
        x = self.act(self.norm_a(self.conv_a(x)))
        return self.act(self.norm_b(self.conv_b(x)))


class UNet(nn.Module):
    """A ResNet U-Net. Build it with `unet3d` or `unet2d`.

    forward: x (B, in_channels, *spatial) float, every spatial size a multiple of 32 ->
      train mode: [main, aux1, ..., auxK] with main (B, num_classes, *spatial) and aux_i at 1/2^i of it
      (K = deep_supervision; K = 0 gives the main tensor alone);
      eval mode: main only, as MONAI's SegResNetDS and nnU-Net do, so nothing downstream of training
      (metrics, predict) ever sees a list.
    `load_report` holds the LoadReport of pretrained encoder weights, or None.
    """

    def __init__(
        self, encoder: ResNetEncoder, num_classes: int, deep_supervision: int, width: float, norm: NormLayer
    ) -> None:
        super().__init__()
        dims = 3 if isinstance(encoder.conv1, nn.Conv3d) else 2
        self.dims, self.num_classes, self.deep_supervision = dims, num_classes, deep_supervision
        self.encoder = encoder
        # skips for s16, s8, s4, s2 are layer3, layer2, layer1, the stem; the input itself for s1
        skip_channels = [*encoder.channels[3::-1], encoder.in_channels]
        widths = [max(8, round(c * width)) for c in DECODER_WIDTHS]
        self.decoder = nn.ModuleDict()
        in_ch = encoder.channels[4]
        for level, skip_ch, out_ch in zip(LEVELS, skip_channels, widths):
            self.decoder[level] = DecoderBlock(in_ch, skip_ch, out_ch, dims, norm)
            in_ch = out_ch
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.heads = nn.ModuleDict({"main": conv(widths[-1], num_classes, kernel_size=1)})
        for i in range(1, deep_supervision + 1):
            self.heads[f"aux{i}"] = conv(widths[-1 - i], num_classes, kernel_size=1)
        init_weights(self.decoder)
        for head in self.heads.values():
            # A head is not followed by a ReLU: std 1/sqrt(fan_in) starts the logits at the scale of the
            # features (fan_out/ReLU would give std 1 for 2 classes and huge first logits; see init.py).
            nn.init.normal_(head.weight, std=1.0 / math.sqrt(head.in_channels))
            nn.init.zeros_(head.bias)
        self.load_report = None

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self._check_input(x)
        *skips, y = self.encoder(x)
        levels = []
        for block, skip in zip(self.decoder.values(), [*skips[::-1], x]):
            y = block(y, skip)
            levels.append(y)
        main = self.heads["main"](levels[-1])
        if not self.training or self.deep_supervision == 0:
            return main
        return [main] + [self.heads[f"aux{i}"](levels[-1 - i]) for i in range(1, self.deep_supervision + 1)]

    def _check_input(self, x: torch.Tensor) -> None:
        name = f"unet{self.dims}d"
        want = self.dims + 2
        if x.dim() != want or x.shape[1] != self.encoder.in_channels:
            axes = "D, H, W" if self.dims == 3 else "H, W"
            raise ValueError(
                f"{name} expects input of shape (B, {self.encoder.in_channels}, {axes}), "
                f"got {tuple(x.shape)}; add the channel axis with x.unsqueeze(1), or build the model "
                "with the matching in_channels"
            )
        bad = [s for s in x.shape[2:] if s % STRIDE or s == 0]
        if bad:
            fixed = tuple(max(STRIDE, math.ceil(s / STRIDE) * STRIDE) for s in x.shape[2:])
            raise ValueError(
                f"{name} needs every spatial size to be a multiple of {STRIDE} (the encoder's stride), got "
                f"input shape {tuple(x.shape)}; pad it to {fixed} (or crop it to multiples of {STRIDE}), "
                f"or predict whole volumes by sliding window with a patch of multiples of {STRIDE} "
                "(nbtools.tasks.sliding_window_predict)"
            )
