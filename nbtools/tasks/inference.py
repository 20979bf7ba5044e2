"""A segmentation model over whole volumes: MONAI's sliding window with Gaussian weighting, flip TTA,
under the run's autocast (`sliding_window_predict`), and a validation pass built on it that keeps
nothing but counts on the device (`evaluate_segmentation`).

MONAI is imported when these run, not with nbtools: its import costs seconds.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from nbtools.losses import main_output
from nbtools.tasks.segmentation import DiceAccumulator

OVERLAP = 0.5  # nnU-Net's tile step of half a patch
SIGMA_SCALE = 0.125  # Gaussian sigma = patch / 8, as nnU-Net and MONAI
OUTPUTS = ("logits", "probs", "mask")


def _flip_sets(flip_axes: Sequence[int], spatial_dims: int) -> list[tuple[int, ...]]:
    """Every combination of the flipped axes as tensor dims, the identity first: 2^k passes (nnU-Net's
    mirroring). flip_axes are spatial axes (0 = D in (B, C, D, H, W)), as Augment3D.flip_axes."""
    axes = sorted(set(flip_axes))
    if any(not isinstance(a, int) or isinstance(a, bool) or not 0 <= a < spatial_dims for a in axes):
        raise ValueError(f"flip_axes must be spatial axes in 0..{spatial_dims - 1}, got {tuple(flip_axes)}")
    dims = [2 + a for a in axes]
    return [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]


def _patch_predictor(model: nn.Module, flips: list[tuple[int, ...]], autocast):
    """patches (n, C_in, *patch) -> float32 main-output logits (n, C, *patch), averaged over the flips,
    each flipped back first. The model runs under `autocast`; everything after it in float32."""

    def predict(patches: torch.Tensor) -> torch.Tensor:
        total = None
        for dims in flips:
            with autocast:
                out = main_output(model(patches.flip(dims) if dims else patches))
            out = out.float().flip(dims) if dims else out.float()
            total = out if total is None else total + out
        return total / len(flips) if len(flips) > 1 else total

    return predict


def _check_patch(patch: Sequence[int], x: torch.Tensor) -> tuple[int, ...]:
    patch = tuple(patch)
    if len(patch) != x.dim() - 2 or not all(isinstance(p, int) and p > 0 for p in patch):
        raise ValueError(
            f"patch must give {x.dim() - 2} positive sizes, one per spatial dim of the input "
            f"{tuple(x.shape)}, got {patch}"
        )
    return patch


@torch.no_grad()
def sliding_window_predict(
    model: nn.Module,
    x: torch.Tensor,
    patch: Sequence[int],
    overlap: float = OVERLAP,
    flip_axes: Sequence[int] = (),
    autocast: contextlib.AbstractContextManager | None = None,
    output: str = "probs",
    sw_batch_size: int = 1,
) -> torch.Tensor:
    """Predict whole inputs x (B, C_in, *spatial) of any size, patch by patch.

    Windows of `patch` overlap by `overlap` (0.5: nnU-Net's) and are blended with Gaussian weights
    (sigma = patch / 8), so patch borders count least; inputs smaller than the patch are padded with
    zeros and cropped back (MONAI's `sliding_window_inference`). Each patch is predicted as it is and
    flipped along every combination of `flip_axes` (spatial axes, e.g. the axes training augmentation
    flipped; () for no TTA), each prediction flipped back, and the logits averaged (nnU-Net's mirroring),
    all before the blending. The model runs in eval mode (restored after) under `autocast` (the run's
    `Precision.autocast()`; None: as the caller's context is); blending runs in float32. A model that still
    returns [main, aux...] gives its main output.

    output: "logits" (B, C, *spatial) float32, the blended logits (what a loss takes); "probs" their
    softmax over C (sigmoid for C == 1); "mask" (B, *spatial) int64 class indices (C == 1: logit > 0).
    The result is on x's device.

    >>> probs = sliding_window_predict(model, volume[None], patch=(64, 64, 64), flip_axes=(0, 1, 2),
    ...                                autocast=precision.autocast())          # doctest: +SKIP
    """
    from monai.inferers import sliding_window_inference

    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1) (0.5 is nnU-Net's), got {overlap!r}")
    if not x.is_floating_point() or x.dim() < 3:
        raise ValueError(f"x must be a float batch (B, C, *spatial), got {tuple(x.shape)} {x.dtype}")
    patch = _check_patch(patch, x)
    flips = _flip_sets(flip_axes, x.dim() - 2)
    predictor = _patch_predictor(model, flips, contextlib.nullcontext() if autocast is None else autocast)
    was_training = model.training
    model.eval()
    try:
        logits = sliding_window_inference(
            x, patch, sw_batch_size, predictor, overlap=overlap, mode="gaussian", sigma_scale=SIGMA_SCALE
        )
    finally:
        model.train(was_training)
    logits = logits.as_tensor() if hasattr(logits, "as_tensor") else logits  # MONAI's MetaTensor
    if output == "logits":
        return logits
    if output == "probs":
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    device: torch.device | str,
    autocast: contextlib.AbstractContextManager | None = None,
    loss_fn=None,
    patch: Sequence[int] | None = None,
    overlap: float = OVERLAP,
    class_names: Sequence[str] | None = None,
    empty: str = "monai",
    prefix: str = "val_",
) -> tuple[dict[str, float], DiceAccumulator]:
    """One validation pass: Dice per case (`DiceAccumulator`) and the mean loss, with one host read.

    batches: (x (B, C_in, *spatial) float, y (B, *spatial) int) pairs, e.g. a DataLoader. Inputs larger
    than `patch` in any dim are predicted whole by `sliding_window_predict` (no TTA); others, or all with
    patch=None, by one forward. Per batch only tp/fp/fn per case and the loss sum stay on the device; the
    logits are dropped, so host and device memory do not grow with the number of cases.
    loss_fn: called on (logits, y) (in eval mode the main output); None leaves `{prefix}loss` out.
    Returns ({prefix}dice..., {prefix}loss} as in `DiceAccumulator.compute`, the accumulator (per_case)).
    """
    acc = DiceAccumulator(num_classes, class_names, empty)
    context = contextlib.nullcontext() if autocast is None else autocast
    loss_sum, n = torch.zeros((), dtype=torch.float64, device=device), 0
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if patch is not None and any(s > p for s, p in zip(x.shape[2:], patch)):
                logits = sliding_window_predict(model, x, patch, overlap, autocast=context, output="logits")
            else:
                with context:
                    logits = main_output(model(x))
                logits = logits.float()
            if loss_fn is not None:
                loss_sum += loss_fn(logits, y).detach().double() * len(y)
            acc.update(logits, y)
            n += len(y)
    finally:
        model.train(was_training)
    counts = acc.counts()
    # counts and loss leave the device together: the pass's one host read (float64 holds counts exactly)
    packed = torch.cat([counts.double().flatten(), loss_sum.view(1)]).cpu().numpy()
    metrics = acc.compute(prefix, counts=packed[:-1].reshape(counts.shape).astype(np.int64))
    if loss_fn is not None:
        metrics[f"{prefix}loss"] = float(packed[-1]) / n
    return metrics, acc
