"""Models: MedicalNet-compatible 3D ResNet, 2D ResNet with attention, ResNet U-Nets (2D and 3D) with deep
supervision, pretrained-weight loading with a report, weight init."""

from nbtools.models.init import init_weights
from nbtools.models.pretrained import LoadReport, load_pretrained
from nbtools.models.resnet2d import resnet2d_attention
from nbtools.models.resnet3d import resnet3d
from nbtools.models.unet2d import unet2d
from nbtools.models.unet3d import unet3d

__all__ = [
    "LoadReport",
    "init_weights",
    "load_pretrained",
    "resnet2d_attention",
    "resnet3d",
    "unet2d",
    "unet3d",
]
