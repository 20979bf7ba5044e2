"""One segmentation case as training reads it: the image channels normalised (`normalized_image`), and the
normalised image and the mask of a 3D case kept in a VolumeCache (`cached_pair`), so a .nii.gz is
decompressed once, not once per patch. An entry is keyed by its file (size, mtime) and, for an image of
several channels, the other channels' sizes and mtimes: any file rewritten rebuilds it."""

from __future__ import annotations

import numpy as np

from nbtools.data.cache import VolumeCache
from nbtools.data.segcases import SegCase
from nbtools.data.segread import read_image, read_mask
from nbtools.data.volumes import normalize as normalize_volume


def normalized_image(image: np.ndarray, ndim: int, normalize: str | None, where: str) -> np.ndarray:
    """float32 (C, *spatial), each channel normalised; a 2D image comes as (H, W, C)."""
    if ndim == 2:
        image = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    image = np.stack([normalize_volume(ch, normalize, where=where) for ch in image])
    return image.astype(np.float32, copy=False)


def cached_pair(
    cache: VolumeCache, case: SegCase, shape: tuple[int, ...], normalize: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (C, D, H, W) normalised, mask int64 (D, H, W); zeros without a mask) of a 3D case."""
    others = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in case.images[1:]]
    key = {"seg": "image", "channels": others, "normalize": normalize}
    where = str(case.images[0])
    image = cache.get(
        case.images[0], key, lambda: normalized_image(read_image(case.images), 3, normalize, where)
    )
    if case.mask is None:
        return image.numpy(), np.zeros(shape, np.int64)
    mask = cache.get(case.mask, {"seg": "mask", "dtype": "compact"}, lambda: _compact(read_mask(case.mask)))
    return image.numpy(), mask.numpy().astype(np.int64)


def _compact(mask: np.ndarray) -> np.ndarray:
    """Class ids as uint8 when they fit (an eighth of int64 on disk and to load), else as they are."""
    return mask.astype(np.uint8) if mask.size and mask.min() >= 0 and mask.max() < 256 else mask
