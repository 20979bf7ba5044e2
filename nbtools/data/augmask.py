"""What `check_augmentation` looks at in segmentation masks: a transform must move the mask with the image
and keep it a map of class ids. Two failures are common and silent: a geometric op that resamples the
mask with linear interpolation (a voxel between class 0 and class 2 becomes 1, a class that is not
there), and a pipeline that loses a class (a mask scaled to [0, 1] and cast back, a crop to empty).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from nbtools.data.augreport import AugIssue

_SHOW_IDS = 6  # class ids named in one detail


def mask_of(x: Any, y: Any) -> bool:
    """True when y is a mask over the sample x: an array whose shape is x's spatial shape (x (C, *spatial)
    as a tensor, or (H, W[, C]) as an image array)."""
    if not isinstance(y, (np.ndarray, torch.Tensor)) or y.ndim < 2:
        return False
    shape, ys = tuple(x.shape), tuple(y.shape)
    return ys == shape[1:] or ys == shape[: len(ys)]


def as_array(m: Any) -> np.ndarray:
    return m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)


class MaskCall(NamedTuple):
    sample: Any
    trial: int
    before: frozenset  # class ids in the op's input mask
    new: tuple  # ids in the output that were not in the input (whole numbers)
    fractional: int  # output values that are not whole numbers (or not finite)
    lost: tuple  # ids of the input that the output no longer holds


@dataclass
class MaskRecord:
    """Every call of one op on a mask."""

    label: str
    calls: list[MaskCall] = field(default_factory=list)

    def add(self, sample: Any, trial: int, before: Any, after: Any) -> None:
        b, a = as_array(before), as_array(after)
        ids_before = frozenset(np.unique(b).tolist())
        whole = np.isfinite(a) & (a == np.round(a)) if a.dtype.kind == "f" else np.ones(a.shape, bool)
        ids_after = set(np.unique(a[whole]).tolist())
        new = tuple(sorted(v for v in ids_after - ids_before))
        lost = tuple(sorted(ids_before - ids_after))
        self.calls.append(MaskCall(sample, trial, ids_before, new, int((~whole).sum()), lost))


def judge_masks(rec: MaskRecord) -> list[AugIssue]:
    """ "mask_interpolated": the output holds values that are not class ids of the input (new ids, or not
    whole numbers); "mask_classes": a class of the input is gone from the output."""
    found = []
    bad = [c for c in rec.calls if c.new or c.fractional]
    if bad:
        c = bad[0]
        what = []
        if c.new:
            what.append(f"class ids {_ids(c.new)} that were not in the input {_ids(c.before)}")
        if c.fractional:
            what.append(f"{c.fractional} values that are not whole numbers")
        found.append(
            AugIssue(
                rec.label,
                c.sample,
                "mask_interpolated",
                f"the mask's labels were interpolated in {len(bad)} of {len(rec.calls)} calls (sample "
                f"{c.sample}, trial {c.trial}: {' and '.join(what)}); resample masks with nearest neighbour "
                f"(albumentations: pass the mask as `mask=`, mask_interpolation=cv2.INTER_NEAREST; "
                f"nbt.data.Augment3D moves a mask y itself)",
            )
        )
    lost = [c for c in rec.calls if c.lost]
    if lost:
        c = lost[0]
        found.append(
            AugIssue(
                rec.label,
                c.sample,
                "mask_classes",
                f"the mask's class set changed in {len(lost)} of {len(rec.calls)} calls (sample {c.sample}, "
                f"trial {c.trial}: class {_ids(c.lost)} of {_ids(c.before)} gone): the transform drops a class "
                f"(a mask rescaled or cast, or cropped or shifted off the image); check the mask path of "
                f"the pipeline, or ignore it when a border crop meant to",
            )
        )
    return found


def _ids(values) -> str:
    v = sorted(values)
    shown = ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v[:_SHOW_IDS])
    return "{" + shown + (", ..." if len(v) > _SHOW_IDS else "") + "}"
