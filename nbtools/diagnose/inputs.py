"""`input-out-of-range`: a cheap look at the first training batch, once per `fit`.

Thresholds, on the finite values: an absolute maximum above INPUT_ABS_MAX = 100, or a standard
deviation outside [INPUT_STD_MIN, INPUT_STD_MAX] = [1e-3, 10]. Z-scored volumes (SyntheticVolumes,
hot voxels included, peak at about 8) and [0, 1] images pass; raw 8-bit images (std about 60) and CT
Hounsfield units (-1000 to 3000) do not, nor data scaled twice (std < 1e-3). Non-finite inputs are
the guards' business (`nonfinite-loss`, with the step), not reported twice here.
"""

from __future__ import annotations

import torch

from nbtools.runs import Finding

INPUT_ABS_MAX, INPUT_STD_MIN, INPUT_STD_MAX = 100.0, 1e-3, 10.0


@torch.no_grad()
def input_range(x: torch.Tensor, epoch: int | None = None, step: int | None = None) -> Finding | None:
    """`input-out-of-range` for one batch (B, ...) of floating inputs (two host syncs). None if fine."""
    if not x.is_floating_point() or not x.numel():
        return None
    flat = x.detach().float().flatten()
    finite = flat[torch.isfinite(flat)]
    if not finite.numel():
        return None
    absmax, mean, std = torch.stack([finite.abs().max(), finite.mean(), finite.std(correction=0)]).tolist()
    issues = []
    if absmax > INPUT_ABS_MAX:
        issues.append(f"abs max {absmax:.4g} > {INPUT_ABS_MAX:g}")
    if not INPUT_STD_MIN <= std <= INPUT_STD_MAX:
        issues.append(f"std {std:.3g} outside [{INPUT_STD_MIN:g}, {INPUT_STD_MAX:g}]")
    if not issues:
        return None
    return Finding(
        "input-out-of-range",
        f"first training batch {tuple(x.shape)}: {'; '.join(issues)} (mean {mean:.3g}, std {std:.3g}, "
        f"abs max {absmax:.4g})",
        "normalize the inputs (z-score per volume, or 8-bit images / 255; window CT Hounsfield units before "
        "scaling), check that augmentations keep the range (nbt.check_augmentation), and find bad samples "
        "with nbt.validate_dataset. fp16 overflows above 65504.",
        epoch=epoch,
        step=step,
    )
