"""Channel and spatial attention for 2D feature maps: Squeeze-and-Excitation and CBAM.

Both map (B, C, H, W) -> (B, C, H, W): they rescale the backbone's last feature map before the
classifier pools it, so the classifier can weigh the channels (and, for CBAM, the places) that
carry the evidence, e.g. one forged patch in a document.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ATTENTIONS = ("se", "cbam", None)


def _hidden(channels: int, reduction: int) -> int:
    if not (isinstance(reduction, int) and reduction >= 1):
        raise ValueError(f"reduction must be an int >= 1, got {reduction!r}")
    return max(channels // reduction, 8)


class SqueezeExcitation(nn.Module):
    """Hu et al. 2018: a sigmoid gate per channel from the globally averaged feature map.

    x: (B, C, H, W) float -> same shape. `reduction` sets the bottleneck width C // reduction (>= 8).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(gate)


class ChannelGate(nn.Module):
    """CBAM's channel attention: one shared MLP on the average- and the max-pooled map, summed."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(gate)


class SpatialGate(nn.Module):
    """CBAM's spatial attention: a k x k conv over the channel-wise mean and max gives a gate per pixel."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if not (isinstance(kernel_size, int) and kernel_size >= 1 and kernel_size % 2 == 1):
            raise ValueError(f"kernel_size must be an odd int >= 1, got {kernel_size!r}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """Woo et al. 2018: channel gate, then spatial gate. x: (B, C, H, W) float -> same shape."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


def attention_block(kind: str | None, channels: int) -> nn.Module:
    """The block for `kind` ("se", "cbam", or None for a parameter-free identity) on `channels` channels."""
    if kind == "se":
        return SqueezeExcitation(channels)
    if kind == "cbam":
        return CBAM(channels)
    if kind is None:
        return nn.Identity()
    raise ValueError(f"attention must be one of {ATTENTIONS}, got {kind!r}")
