"""Weight initialisation for ReLU networks (convolutions, norms, linear heads).

PyTorch's default conv init (Kaiming-uniform with a=sqrt(5)) shrinks activations layer by layer in deep
3D ResNets; He et al.'s Kaiming-normal (fan_out, ReLU gain) keeps their scale, which is what torchvision
and MedicalNet use for their ResNets.

Linear layers are the exception. The popular recipe "Kaiming fan_out/ReLU for Linear too" gives a 2-class
head std sqrt(2/2) = 1, and on a 3D ResNet's ~512-2048 pooled features that makes the first logits huge
(measured std ~18 for ResNet-10-3D, ~49 for ResNet-50-3D on z-scored input): a first loss of 10-30 and a
gradient spike on step one. A head is not followed by a ReLU, so it gets std 1/sqrt(fan_in) instead
(LeCun-normal), which starts the logits at the scale of the features (std ~1).

>>> import torch.nn as nn
>>> net = init_weights(nn.Sequential(nn.Conv3d(1, 8, 3), nn.BatchNorm3d(8), nn.ReLU()))
"""

from __future__ import annotations

import torch.nn as nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def init_weights(module: nn.Module) -> nn.Module:
    """Initialise every submodule of `module` in place and return `module`.

    - Conv (1d/2d/3d, transposed too) weights: Kaiming-normal, ``mode="fan_out"``, ``nonlinearity="relu"``,
      i.e. std = sqrt(2 / fan_out) with fan_out = out_channels * kernel volume; biases 0.
    - Linear weights: normal with std = 1 / sqrt(in_features) (``mode="fan_in"``, linear gain; see the
      module docstring for why not fan_out/ReLU); biases 0.
    - Norm layers (BatchNorm*, InstanceNorm*, GroupNorm, LayerNorm) with affine parameters: weight 1,
      bias 0. Running statistics are left alone.

    Only parameters owned directly by those layer types are touched; anything else keeps its own init.
    Weights are written under ``torch.no_grad()`` through ``nn.init``, never through ``.data``.
    """
    for m in module.modules():
        if isinstance(m, (*_CONV, nn.Linear)):
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORM):
            # affine=False / elementwise_affine=False norms have no weight or bias to set.
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return module
