"""Embedded synthetic 3D dataset: z-scored noisy volumes, some with a lesion-like blob. Offline, seeded.

Every notebook and test needs a 3D classification set that runs without internet, is the same on every
machine, and is hard enough that "the model learned something" means something: the classes are not
separable by a global statistic such as the max intensity, but a small 3D ResNet learns them in a few
CPU epochs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

MIN_SIDE = 16  # resnet3d's smallest input
_LABEL_STREAM, _VOLUME_STREAM = 1, 0  # separate RNG streams: labels never shift a volume's noise
_EDGE = 0.15  # soft-edge width of lesions and tubes, as a fraction of their radius
_BACKGROUND = 0.3  # std of the broad bumps' amplitudes, in noise-std units at noise=1
_TUBES = (0, 5)  # vessel-like distractors per volume, both classes


def item_index(index: int, dataset) -> int:
    """`index` as a position in `dataset` (negative counts from the end), for the embedded datasets'
    __getitem__; TypeError for a non-int, IndexError naming the dataset and its length."""
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise TypeError(f"index must be an int, got {type(index).__name__}")
    n = len(dataset)
    i = int(index) + n if index < 0 else int(index)
    if not 0 <= i < n:
        raise IndexError(f"index {index} is out of range for {type(dataset).__name__} of length {n}")
    return i


class SyntheticVolumes(Dataset):
    """Map-style dataset of ``(x, y)``: x float32 tensor (1, D, H, W), y int in {0, 1}.

    Every volume has a smooth low-frequency background (broad Gaussian bumps of either sign, like a bias
    field), white noise of std `noise`, 1-3 hot voxels (artefact spikes) and 0-5 vessel-like tubes as
    bright as lesions. Positives (y=1) also carry one lesion: an axis-aligned ellipsoid with a soft edge,
    radii drawn from `lesion_radius` (voxels) and brightness from `lesion_contrast` (same units as the
    noise std at noise=1), anywhere inside the volume. Each volume is then z-scored (mean 0, std 1), as
    MRI/CT preprocessing does. Hot voxels make the max intensity useless and the tubes blur the intensity
    histogram, so no single global statistic separates the classes; the lesion's compact 3D shape does.

    Measured at the defaults (32^3, n=128 train / 64 val from another seed, 3 data seeds x 3 init seeds):
    resnet3d(depth=10, width=0.25), Adam(lr=1e-3), batch 8, 5 epochs reaches validation ROC-AUC 0.85-0.99
    (mean 0.92) in ~2 s of training on an idle 2-core CPU; the max intensity alone gives AUC 0.50-0.62,
    the best global statistic tried (99th percentile) 0.85-0.87.

    Exactly ``round(n * positive_fraction)`` samples are positive, at seeded random indices; `labels`
    (int64 array) gives them without generating a volume. Volume i is a function of (seed, i) and its label
    only, generated on demand (nothing cached): any index in any order, and two instances with the same
    arguments agree bit for bit. Use different seeds (not different n) for train and validation sets.

    >>> ds = SyntheticVolumes(n=64, shape=(32, 32, 32), positive_fraction=0.3, seed=0)
    >>> x, y = ds[0]
    >>> x.shape, x.dtype, int(ds.labels.sum())
    (torch.Size([1, 32, 32, 32]), torch.float32, 19)
    """

    def __init__(
        self,
        n: int = 64,
        shape: tuple[int, int, int] = (32, 32, 32),
        positive_fraction: float = 0.3,
        seed: int = 0,
        noise: float = 1.0,
        lesion_radius: tuple[float, float] = (4.0, 7.0),
        lesion_contrast: tuple[float, float] = (1.5, 3.0),
    ) -> None:
        if not (isinstance(n, (int, np.integer)) and n >= 1):
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        shape = tuple(shape)
        if len(shape) != 3 or any(not isinstance(s, (int, np.integer)) or s < MIN_SIDE for s in shape):
            raise ValueError(
                f"shape must be 3 ints (D, H, W), each >= {MIN_SIDE} (resnet3d's minimum), got {shape!r}"
            )
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction!r}")
        if not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0 (std of the white noise), got {noise!r}")
        r_lo, r_hi = lesion_radius
        if not 1.0 <= r_lo <= r_hi or 2 * r_hi + 2 > min(shape):
            raise ValueError(
                f"lesion_radius must be (low, high) voxels with 1 <= low <= high and 2*high + 2 <= the "
                f"smallest side {min(shape)}, got {lesion_radius!r}"
            )
        c_lo, c_hi = lesion_contrast
        if not 0.0 < c_lo <= c_hi:
            raise ValueError(
                f"lesion_contrast must be (low, high) with 0 < low <= high, got {lesion_contrast!r}"
            )

        self.n = int(n)
        self.shape = tuple(int(s) for s in shape)
        self.positive_fraction = float(positive_fraction)
        self.seed = int(seed)
        self.noise = float(noise)
        self.lesion_radius, self.lesion_contrast = (float(r_lo), float(r_hi)), (float(c_lo), float(c_hi))
        rng = np.random.default_rng([self.seed, _LABEL_STREAM, self.n])
        labels = np.zeros(self.n, dtype=np.int64)
        labels[rng.choice(self.n, size=round(self.n * self.positive_fraction), replace=False)] = 1
        self.labels = labels

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i = item_index(index, self)
        vol, _ = self._generate(i)
        return torch.from_numpy(vol).unsqueeze(0), int(self.labels[i])

    def lesion(self, index: int) -> dict | None:
        """The lesion of sample `index` (None for a negative): centre and radii (D, H, W order, voxels)
        and contrast (noise stds, before z-scoring). For plotting slices through it and for tests."""
        i = item_index(index, self)
        return self._generate(i)[1] if self.labels[i] else None

    def _generate(self, i: int) -> tuple[np.ndarray, dict]:
        rng = np.random.default_rng([self.seed, _VOLUME_STREAM, i])
        size = np.array(self.shape, dtype=np.float64)
        axes = [np.arange(s, dtype=np.float64) for s in self.shape]

        # Background: broad bumps (sigma 15-35% of the side) of either sign.
        vol = np.zeros(self.shape, dtype=np.float64)
        for _ in range(4):
            centre = rng.uniform(0, size)
            sigma = rng.uniform(0.15, 0.35, 3) * size
            amp = rng.normal(0.0, _BACKGROUND)
            g = [np.exp(-0.5 * ((a - c) / s) ** 2) for a, c, s in zip(axes, centre, sigma, strict=True)]
            vol += amp * g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
        vol += self.noise * rng.standard_normal(self.shape)

        # Hot voxels in both classes, a few noise stds high: the max intensity alone must not give it away.
        n_hot = rng.integers(1, 4)
        hot = tuple(rng.integers(0, s, n_hot) for s in self.shape)
        vol[hot] += rng.uniform(3.0, 6.0, n_hot)

        # Vessel-like tubes in both classes, as bright as lesions: intensity histograms (quantiles, skew)
        # then overlap between classes and only the shape (tube vs compact blob) tells them apart.
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (D, H, W, 3)
        for _ in range(rng.integers(_TUBES[0], _TUBES[1] + 1)):
            start = rng.uniform(0, size)
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            length = rng.uniform(0.4, 0.9) * size.min()
            radius = rng.uniform(1.2, 2.2)
            t = np.clip((grid - start) @ direction, 0.0, length)
            dist = np.linalg.norm(grid - start - t[..., None] * direction, axis=-1)
            vol += rng.uniform(*self.lesion_contrast) * _soft_inside(dist / radius)

        # Lesion parameters are drawn for every sample so a label never shifts the random stream.
        radii = rng.uniform(*self.lesion_radius, 3)
        centre = rng.uniform(radii + 1, size - radii - 1)
        contrast = rng.uniform(*self.lesion_contrast)
        info = {"centre": tuple(centre.tolist()), "radii": tuple(radii.tolist()), "contrast": float(contrast)}
        if self.labels[i]:
            d2 = sum(((a - c) / r) ** 2 for a, c, r in zip(np.ix_(*axes), centre, radii, strict=True))
            vol += contrast * _soft_inside(np.sqrt(d2))

        vol = (vol - vol.mean()) / vol.std()
        return vol.astype(np.float32), info


def _soft_inside(r: np.ndarray) -> np.ndarray:
    """~1 for normalised radius r < 1, ~0 beyond 1 + 3 * _EDGE: a logistic, via tanh so it never overflows."""
    return 0.5 * (1.0 - np.tanh((r - 1.0) / (2 * _EDGE)))
