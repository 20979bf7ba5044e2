"""torchvision's ImageNet ResNet weights, fetched through torch.hub's cache, with an error that says
what to do when there is no internet (CI, a firewalled cluster) instead of a bare URLError or a hang,
and loaded into a backbone (`resnet2d_attention`, `unet2d`) with a load report."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from nbtools.models.pretrained import LoadReport, load_pretrained

log = logging.getLogger(__name__)

# IMAGENET1K_V1 for every depth: the classic weights, trained with the same recipe (resnet50's
# DEFAULT is V2, trained with a heavier recipe).
WEIGHTS = {
    "resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": tvm.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1,
}
DOWNLOAD_TIMEOUT = 30.0  # seconds without a byte before a connect or read gives up


def cached_file(backbone: str) -> Path:
    """Where torch.hub keeps (or will keep) `backbone`'s ImageNet weights, e.g.
    ~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth."""
    name = os.path.basename(urlparse(WEIGHTS[backbone].url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def imagenet_state_dict(backbone: str, timeout: float = DOWNLOAD_TIMEOUT) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of torchvision's `backbone` (keys conv1.*, bn1.*, layer1-4.*, fc.*),
    from torch.hub's cache or downloaded into it (hash-checked).

    The download runs with a socket timeout of `timeout` seconds (the process default is restored
    after), so a network that drops packets fails instead of hanging the notebook.

    Raises:
        RuntimeError: the download failed (no internet, DNS, HTTP error, timeout); the message names the
            file and how to pass a local copy instead.
    """
    weights = WEIGHTS[backbone]
    path = cached_file(backbone)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except OSError as e:  # URLError, HTTPError, socket timeouts and DNS errors are all OSErrors
        raise RuntimeError(
            f"could not download the ImageNet weights for {backbone} ({weights}) from {weights.url}: "
            f"{type(e).__name__}: {e}. Without internet, get the file {path.name} on a machine that has it "
            f"(that URL, or torchvision.models.{backbone}(weights='IMAGENET1K_V1'), which caches it under "
            f"~/.cache/torch/hub/checkpoints/), copy it here and pass its path: "
            f"resnet2d_attention({backbone!r}, weights='/path/{path.name}'); or put it at {path}, "
            "where weights='imagenet' finds it"
        ) from e
    finally:
        socket.setdefaulttimeout(previous)


def load_backbone_weights(
    part: nn.Module, backbone: str, weights: str | os.PathLike, verbose: bool
) -> LoadReport:
    """Load `weights` ("imagenet" or a state-dict file) into `part`, a module whose keys are
    torchvision's ResNet keys minus fc (conv1.*, bn1.*, layer1-4.*), and return the LoadReport
    (printed when `verbose`, logged at INFO otherwise)."""
    if isinstance(weights, str) and weights == "imagenet":
        state = imagenet_state_dict(backbone)
        report = load_pretrained(part, state, verbose=False)
        report.source = f"torchvision {WEIGHTS[backbone]} ({cached_file(backbone)})"
        if verbose:
            print(report)
        else:
            log.info("%s", report)
        return report
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be None, 'imagenet' or a file path, got {type(weights).__name__}")
    if not Path(weights).is_file():
        raise FileNotFoundError(
            f"no weights file at {str(weights)!r}; pass weights='imagenet' to download torchvision's, or the "
            f"path of a copy of {cached_file(backbone).name} (torch.hub keeps it in "
            "~/.cache/torch/hub/checkpoints/ on a machine that downloaded it)"
        )
    return load_pretrained(part, weights, verbose=verbose)
