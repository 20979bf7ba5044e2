"""Embedded synthetic segmentation sets, 3D and 2D, that keep every segmentation notebook offline: each
foreground class is a blob brighter than the background by its own amount, under noise and a smooth bias
field, so a small U-Net learns them in a few CPU epochs while a single threshold does not segment them
cleanly (the noise makes single voxels ambiguous; the blob's extent does not)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from nbtools.data.augment2d import to_tensor
from nbtools.data.synthetic import MIN_SIDE, item_index

_STREAM = 2  # SyntheticVolumes uses streams 0 and 1; a different stream keeps these independent
CONTRAST = 2.5  # class c is c * CONTRAST noise stds above the background (3D), before z-scoring
_COLOURS = ((220, 60, 60), (60, 200, 80), (70, 90, 230), (230, 200, 40), (200, 70, 210))  # 2D class tints


def _check(n, num_classes, seed, noise) -> None:
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not (isinstance(num_classes, (int, np.integer)) and num_classes >= 2):
        raise ValueError(
            f"num_classes must be an int >= 2 (background and at least one class), got {num_classes!r}"
        )
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")


def _blobs(
    rng: np.random.Generator, shape: tuple[int, ...], num_classes: int
) -> tuple[np.ndarray, list[dict]]:
    """Mask (int64, shape) with one ellipsoid per foreground class, later classes drawn over earlier ones;
    radii 12-25 % of each side, centres keeping the whole blob one voxel inside the case."""
    size = np.asarray(shape, dtype=np.float64)
    axes = np.ix_(*[np.arange(s, dtype=np.float64) for s in shape])
    mask = np.zeros(shape, dtype=np.int64)
    info = []
    for c in range(1, num_classes):
        radii = rng.uniform(0.12, 0.25, len(shape)) * size
        centre = rng.uniform(radii + 1, size - radii - 1)
        inside = sum(((a - m) / r) ** 2 for a, m, r in zip(axes, centre, radii)) <= 1.0
        mask[inside] = c
        info.append({"class": c, "centre": tuple(centre.tolist()), "radii": tuple(radii.tolist())})
    return mask, info


def _bias(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float) -> np.ndarray:
    """A smooth field: a random linear ramp across the case, amplitude in the units of the noise."""
    axes = np.ix_(*[np.linspace(-1, 1, s) for s in shape])
    return amplitude * sum(rng.uniform(-1, 1) * a for a in axes)


class SyntheticSegVolumes(Dataset):
    """Map-style dataset of ``(x, mask)``: x float32 (1, D, H, W) z-scored, mask int64 (D, H, W) in
    0..num_classes-1. Every case holds one ellipsoid per foreground class (class c is c * 2.5 noise stds
    brighter, radii 12-25 % of the side), white noise of std `noise` and a linear bias field.

    Case i is a function of (seed, i) only: any index in any order, the same on every machine. `classes`
    ("background", "class_1", ...), `num_classes` and `blobs(i)` (centre and radii per class, (D, H, W)
    order) describe it; `nbt.data.write_segmentation_folder` writes it as NIfTI files.

    >>> ds = SyntheticSegVolumes(16, shape=(32, 32, 32), num_classes=3, seed=0)
    >>> x, mask = ds[0]; x.shape, mask.shape, sorted(mask.unique().tolist())
    (torch.Size([1, 32, 32, 32]), torch.Size([32, 32, 32]), [0, 1, 2])
    """

    def __init__(
        self, n: int = 16, shape=(32, 32, 32), num_classes: int = 3, seed: int = 0, noise: float = 1.0
    ):
        _check(n, num_classes, seed, noise)
        shape = tuple(shape)
        if len(shape) != 3 or any(not isinstance(s, (int, np.integer)) or s < MIN_SIDE for s in shape):
            raise ValueError(f"shape must be 3 ints (D, H, W), each >= {MIN_SIDE}, got {shape!r}")
        self.n, self.shape, self.num_classes = int(n), tuple(int(s) for s in shape), int(num_classes)
        self.seed, self.noise = int(seed), float(noise)
        self.classes = ["background"] + [f"class_{c}" for c in range(1, self.num_classes)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        vol, mask, _ = self._generate(item_index(index, self))
        return torch.from_numpy(vol).unsqueeze(0), torch.from_numpy(mask)

    def blobs(self, index: int) -> list[dict]:
        return self._generate(item_index(index, self))[2]

    def _generate(self, i: int):
        rng = np.random.default_rng([self.seed, _STREAM, 3, i])
        mask, info = _blobs(rng, self.shape, self.num_classes)
        vol = CONTRAST * mask + _bias(rng, self.shape, 0.5) + self.noise * rng.standard_normal(self.shape)
        vol = (vol - vol.mean()) / vol.std()
        return vol.astype(np.float32), mask, info


class SyntheticSegImages(Dataset):
    """Map-style dataset of ``(x, mask)``: x float32 (3, size, size) ImageNet-normalised (as
    AlbumentationsDataset gives), or with raw=True a uint8 RGB numpy array (size, size, 3) for an
    albumentations pipeline; mask int64 (size, size) (numpy with raw=True). One ellipse per foreground
    class, tinted by its own colour over a grey, noisy, shaded background.

    >>> ds = SyntheticSegImages(8, size=64, num_classes=2, seed=0)
    >>> x, mask = ds[0]; x.shape, mask.shape
    (torch.Size([3, 64, 64]), torch.Size([64, 64]))
    """

    def __init__(
        self,
        n: int = 32,
        size: int = 64,
        num_classes: int = 2,
        seed: int = 0,
        noise: float = 25.0,
        raw: bool = False,
    ):
        _check(n, num_classes, seed, noise)
        if not (isinstance(size, (int, np.integer)) and size >= MIN_SIDE):
            raise ValueError(f"size must be an int >= {MIN_SIDE}, got {size!r}")
        if num_classes - 1 > len(_COLOURS):
            raise ValueError(f"num_classes must be at most {len(_COLOURS) + 1}, got {num_classes}")
        self.n, self.size, self.num_classes = int(n), int(size), int(num_classes)
        self.seed, self.noise, self.raw = int(seed), float(noise), bool(raw)
        self.classes = ["background"] + [f"class_{c}" for c in range(1, self.num_classes)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        image, mask, _ = self._generate(item_index(index, self))
        if self.raw:
            return image, mask
        return to_tensor(image), torch.from_numpy(mask)

    def blobs(self, index: int) -> list[dict]:
        return self._generate(item_index(index, self))[2]

    def _generate(self, i: int):
        rng = np.random.default_rng([self.seed, _STREAM, 2, i])
        shape = (self.size, self.size)
        mask, info = _blobs(rng, shape, self.num_classes)
        grey = 110.0 + _bias(rng, shape, 30.0)
        image = np.repeat(grey[..., None], 3, axis=2)
        for c in range(1, self.num_classes):
            # halfway from the background to the class colour: visible, but not one colour threshold away
            tint = 0.5 * (np.asarray(_COLOURS[c - 1], dtype=np.float64) - 110.0)
            image[mask == c] += tint
        image += self.noise * rng.standard_normal(image.shape)
        return np.clip(np.round(image), 0, 255).astype(np.uint8), mask, info
