"""Random training patches from a case, nnU-Net's way: a fraction of them (a third by default) centred on
a voxel of a foreground class, the rest anywhere; a case smaller than the patch is padded.

Why oversample: a random 64^3 patch of a brain scan holds no lesion most of the time, and a network fed
mostly background learns to predict background (the doctor's `seg-background-only`). nnU-Net forces a
third of each batch to centre on foreground, picking the class first (uniformly among the classes the
case holds) and then one of its voxels, so a rare class is not drowned by a common one.

Everything random comes from the `numpy.random.Generator` passed in, so a patch is a function of that
generator's seed: the dataset seeds it from (seed, epoch, index) and a resumed run draws the same patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PatchBox:
    """Where a patch lies in its case: `start` per spatial axis (negative where the case is smaller than
    the patch and sits inside it), `size` (the patch), `shape` (the case's spatial shape), and whether it
    was centred on a foreground voxel (`centred_on` the class id, or None)."""

    start: tuple[int, ...]
    size: tuple[int, ...]
    shape: tuple[int, ...]
    centred_on: int | None = None

    @property
    def pad(self) -> tuple[tuple[int, int], ...]:
        """(before, after) voxels of padding per axis: nonzero only where the case is smaller than the patch."""
        return tuple(
            (max(0, -s), max(0, s + p - n)) for s, p, n in zip(self.start, self.size, self.shape, strict=True)
        )

    @property
    def padded(self) -> bool:
        return any(b or a for b, a in self.pad)


def needed_pad(shape: tuple[int, ...], patch: tuple[int, ...]) -> tuple[int, ...]:
    """Voxels a case of `shape` lacks per axis to hold a `patch` (0 where it is large enough)."""
    return tuple(max(0, p - s) for s, p in zip(shape, patch, strict=True))


def choose_box(
    mask: np.ndarray, patch: tuple[int, ...], rng: np.random.Generator, oversample: float
) -> PatchBox:
    """A random patch box in a case whose mask (int class ids, *spatial) is `mask`.

    With probability `oversample` the box is centred on a random voxel of a random foreground class the
    case holds (when it holds none, the box is drawn as any other); otherwise its start is uniform over
    every position that keeps the patch inside the case (or the case inside the patch, per axis).
    The centred box is shifted back inside those bounds, so the chosen voxel may sit off centre near an
    edge, but it is always in the patch. The draws are the same in number whatever the branch.
    """
    shape = mask.shape
    lo = [min(0, n - p) for n, p in zip(shape, patch, strict=True)]
    hi = [max(0, n - p) for n, p in zip(shape, patch, strict=True)]
    force = rng.random() < oversample
    start = [int(rng.integers(a, b + 1)) for a, b in zip(lo, hi)]
    pick_class, pick_voxel = rng.random(), rng.random()
    if not force:
        return PatchBox(tuple(start), tuple(patch), tuple(shape))
    flat = mask.ravel()
    counts = np.bincount(flat)
    present = np.flatnonzero(counts[1:]) + 1
    if not len(present):
        return PatchBox(tuple(start), tuple(patch), tuple(shape))
    cls = int(present[min(int(pick_class * len(present)), len(present) - 1)])
    k = min(int(pick_voxel * counts[cls]), int(counts[cls]) - 1)
    voxel = np.unravel_index(int(np.flatnonzero(flat == cls)[k]), shape)
    start = [int(np.clip(v - p // 2, a, b)) for v, p, a, b in zip(voxel, patch, lo, hi)]
    return PatchBox(tuple(start), tuple(patch), tuple(shape), centred_on=cls)


def cut(array: np.ndarray, box: PatchBox, fill, channel_axis: int | None) -> np.ndarray:
    """The part of `array` inside `box`, padded with `fill` where the box reaches beyond the case.

    array: (*spatial) with channel_axis None, (C, *spatial) with 0, (*spatial, C) with -1. fill: one value,
    or one per channel (shape (C,)).
    """
    spatial_axes = list(range(array.ndim))
    if channel_axis is not None:
        spatial_axes.remove(channel_axis % array.ndim)
    src, dst = [slice(None)] * array.ndim, [slice(None)] * array.ndim
    out_shape = list(array.shape)
    for ax, s, p, n in zip(spatial_axes, box.start, box.size, box.shape, strict=True):
        a, b = max(s, 0), min(s + p, n)
        src[ax], dst[ax] = slice(a, b), slice(a - s, b - s)
        out_shape[ax] = p
    if not box.padded:
        return np.ascontiguousarray(array[tuple(src)])
    fill = np.asarray(fill, dtype=array.dtype)
    if fill.ndim and channel_axis is not None:
        view = [1] * array.ndim
        view[channel_axis] = -1
        fill = fill.reshape(view)
    out = np.empty(out_shape, dtype=array.dtype)
    out[...] = fill
    out[tuple(dst)] = array[tuple(src)]
    return out
