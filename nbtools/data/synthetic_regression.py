"""Embedded synthetic regression set: noisy volumes (or images) holding 1-3 bright blobs, whose target is
the blobs' total size. Offline, seeded, with a known answer.

The regression recipes and notebook 07 need a set that runs without internet, is the same on every
machine, and has an answer that can be checked: the target of sample i is exactly the sum of its blobs'
soft masks (voxels, or pixels in 2D), computed from the noiseless image, and the number of blobs is a
second, classification target (seed 002's pipeline: a real-valued output with an auxiliary count head).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from nbtools.data.synthetic import _soft_inside, item_index

MAX_BLOBS = 3
_COUNT_STREAM, _IMAGE_STREAM = 3, 2  # separate RNG streams from SyntheticVolumes' 0 and 1


class SyntheticRegressionVolumes(Dataset):
    """Map-style dataset of ``(x, y)``: x float32 (channels, *shape), z-scored; y float32 (1,), the total
    size of its blobs in voxels (pixels for a 2D shape). With heads=True, y is a dict {"size": (1,) float32,
    "count": int64 number of blobs - 1 (class 0, 1, 2)}, the targets of a two-head model.

    Every sample has white noise of std `noise` and 1-3 ball-shaped blobs (soft edge) of radius drawn from
    `radius` (voxels) and contrast 2-3 noise stds, anywhere inside; where blobs overlap their masks add, so
    the target stays the sum over blobs. `.targets` (n, 1) float64 and `.counts` (n,) int64 give every
    answer without generating an image; sample i is a function of (seed, i) only, any index in any order.

    shape: (D, H, W) or (H, W); channels: copies of the image along the first axis (3 for an ImageNet
    backbone).

    >>> ds = SyntheticRegressionVolumes(n=32, shape=(16, 16, 16), seed=0)
    >>> x, y = ds[0]
    >>> x.shape, y.shape, bool(y[0] == ds.targets[0, 0])
    (torch.Size([1, 16, 16, 16]), torch.Size([1]), True)
    """

    def __init__(
        self,
        n: int = 64,
        shape: tuple[int, ...] = (32, 32, 32),
        seed: int = 0,
        noise: float = 1.0,
        radius: tuple[float, float] | None = None,
        channels: int = 1,
        heads: bool = False,
    ) -> None:
        if not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3) or min(shape) < 8:
            raise ValueError(f"shape must be (D, H, W) or (H, W), each side >= 8, got {shape!r}")
        if not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0 (std of the white noise), got {noise!r}")
        lo, hi = radius or (min(shape) / 10, min(shape) / 5)
        if not 1.0 <= lo <= hi or 2 * hi + 2 > min(shape):
            raise ValueError(
                f"radius must be (low, high) with 1 <= low <= high and 2*high + 2 <= the smallest side "
                f"{min(shape)}, got {radius!r}"
            )
        if not (isinstance(channels, int) and channels >= 1):
            raise ValueError(f"channels must be an int >= 1, got {channels!r}")
        self.n, self.shape, self.seed, self.noise = int(n), shape, int(seed), float(noise)
        self.radius, self.channels, self.heads = (float(lo), float(hi)), channels, bool(heads)
        rng = np.random.default_rng([self.seed, _COUNT_STREAM, self.n])
        self.counts = rng.integers(0, MAX_BLOBS, self.n).astype(np.int64)  # blobs - 1
        self.targets = np.array([[self._generate(i)[1]] for i in range(self.n)], dtype=np.float64)
        self.target_names = ["size"]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        i = item_index(index, self)
        image, _ = self._generate(i, noisy=True)
        x = torch.from_numpy(image).unsqueeze(0).expand(self.channels, *self.shape).contiguous()
        size = torch.tensor([self.targets[i, 0]], dtype=torch.float32)
        if self.heads:
            return x, {"size": size, "count": torch.tensor(int(self.counts[i]))}
        return x, size

    def _generate(self, i: int, noisy: bool = False) -> tuple[np.ndarray | None, float]:
        """(the z-scored image, or None when not `noisy`; the target: the blobs' total soft mask)."""
        rng = np.random.default_rng([self.seed, _IMAGE_STREAM, i])
        size = np.array(self.shape, dtype=np.float64)
        axes = np.ix_(*[np.arange(s, dtype=np.float64) for s in self.shape])
        clean, total = np.zeros(self.shape), 0.0
        for _ in range(int(self.counts[i]) + 1):
            r = rng.uniform(*self.radius)
            centre = rng.uniform(r + 1, size - r - 1)
            contrast = rng.uniform(2.0, 3.0)
            mask = _soft_inside(np.sqrt(sum(((a - c) / r) ** 2 for a, c in zip(axes, centre))))
            clean += contrast * mask
            total += float(mask.sum())
        if not noisy:
            return None, total
        vol = clean + self.noise * rng.standard_normal(self.shape)
        return ((vol - vol.mean()) / vol.std()).astype(np.float32), total
