"""One volume file in, one preprocessed float32 (D, H, W) array out: read, normalise, crop/pad or resize.

Readers: .npy, .npz (the first array, or a named key) and NIfTI .nii / .nii.gz through nibabel. NIfTI
arrays are taken in their stored axis order, with the header's intensity scaling applied; nothing is
reoriented or resampled to a spacing. A .nii.gz is decompressed whole before nibabel decodes it, so
gzip checks its CRC and length: nib.load stops reading at the last voxel, so a damaged stream of the
right length decoded to garbage values and a cut-off trailer went unseen. This costs the same CPU time
as nibabel's own read (bench/README.md).
"""

from __future__ import annotations

import gzip
import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".npy", ".npz", ".nii", ".nii.gz")
NORMALIZE = ("zscore", "minmax", None)
RESIZE = ("crop_or_pad", "resize")


class VolumeReadError(OSError):
    """A volume file that cannot be read; the message names the file and what to do."""


def volume_suffix(path: str | Path) -> str | None:
    """The supported suffix of `path` (".nii.gz" counts as one), or None."""
    name = Path(path).name.lower()
    return next((s for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def read_volume(path: str | Path, key: str | None = None) -> np.ndarray:
    """The 3D array in `path` as float32 (D, H, W); a singleton channel axis first or last is dropped."""
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix is None:
        raise VolumeReadError(f"{path}: unsupported file type; use one of {', '.join(VOLUME_SUFFIXES)}")
    errors: tuple[type[BaseException], ...] = (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        RuntimeError,
    )
    if suffix in (".nii", ".nii.gz"):
        try:
            import nibabel as nib
        except ImportError as e:
            raise ImportError(
                f"reading {path} needs nibabel, a dependency of nbtools: pip install 'nibabel>=5.2'"
            ) from e
        # a cut header raises ImageFileError, a broken one HeaderDataError or WrapStructError, a damaged
        # gzip stream zlib.error: none of them is an OSError
        errors += (
            nib.filebasedimages.ImageFileError,
            nib.spatialimages.HeaderDataError,
            nib.wrapstruct.WrapStructError,
            zlib.error,
        )
    if not path.is_file():
        raise VolumeReadError(
            f"{path} does not exist (any more): restore it, or build the dataset again without it"
        )
    try:
        if suffix == ".npy":
            vol = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise VolumeReadError(f"{path} holds no arrays")
                name = key if key is not None else z.files[0]
                if name not in z.files:
                    raise VolumeReadError(f"{path} has no array {name!r}; it holds {z.files}: pass npz_key=")
                vol = z[name]
        elif suffix == ".nii.gz":
            vol = _nifti_from_bytes(gzip.decompress(path.read_bytes()), path, nib).get_fdata(dtype=np.float32)
        else:
            vol = nib.load(str(path)).get_fdata(dtype=np.float32)
    except VolumeReadError:
        raise
    except errors as e:
        raise VolumeReadError(
            f"cannot read {path} ({type(e).__name__}: {e}); the file is truncated or not a {suffix} volume: "
            f"export it again, or remove it from the folder / CSV"
        ) from e
    if vol.dtype.kind not in "biuf":
        raise VolumeReadError(f"{path} holds a {vol.dtype} array, not numbers")
    if vol.ndim == 4 and vol.shape[0] == 1:
        vol = vol[0]
    elif vol.ndim == 4 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim != 3:
        raise VolumeReadError(
            f"{path} holds an array of shape {vol.shape}; expected a 3D volume (D, H, W), optionally with "
            f"one singleton channel axis"
        )
    return vol.astype(np.float32, copy=False)


def _nifti_from_bytes(raw: bytes, path: Path, nib):
    """The NIfTI-1 or NIfTI-2 image in `raw`, told apart by sizeof_hdr (348 or 540, either byte order)
    as nib.load tells them apart."""
    sizes = {int.from_bytes(raw[:4], order) for order in ("little", "big")}
    if 540 in sizes:
        return nib.Nifti2Image.from_bytes(raw)
    if 348 in sizes:
        return nib.Nifti1Image.from_bytes(raw)
    raise VolumeReadError(
        f"{path} is gzip data but not a NIfTI image (no NIfTI-1 or NIfTI-2 header at its start)"
    )


def normalize(
    vol: np.ndarray, how: str | None, mask_threshold: float | None = None, where: str = "volume"
) -> np.ndarray:
    """z-score ("zscore": mean 0, std 1 over the foreground, i.e. voxels > mask_threshold, or all voxels),
    min-max to [0, 1] ("minmax"), or nothing (None). Statistics use finite voxels only, so a NaN voxel
    stays NaN for `validate_dataset` to find instead of turning the whole volume into NaN."""
    if how is None:
        return vol
    finite = np.isfinite(vol)
    fg = finite if mask_threshold is None else finite & (vol > mask_threshold)
    if not fg.any():
        top = float(vol[finite].max()) if finite.any() else float("nan")
        raise ValueError(
            f"mask_threshold={mask_threshold} leaves no foreground voxels in {where} (its max is {top:.4g}); "
            f"lower it, or pass mask_threshold=None to normalise over the whole volume"
        )
    vals = vol[fg].astype(np.float64)
    if how == "zscore":
        mean, std = vals.mean(), vals.std()
        if std == 0:
            log.warning("%s is constant over its foreground (value %g): z-score gives zeros", where, mean)
            std = 1.0
        return ((vol - mean) / std).astype(np.float32)
    lo, hi = vals.min(), vals.max()
    if hi == lo:
        log.warning("%s is constant over its foreground (value %g): min-max gives zeros", where, lo)
        return np.zeros_like(vol)
    return ((vol - lo) / (hi - lo)).astype(np.float32)


def crop_or_pad(vol: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Centre-crop or pad each axis to `shape`. Padding takes the volume's minimum, which after
    normalisation is background (air, no signal), so the border does not read as tissue."""
    finite = vol[np.isfinite(vol)]
    fill = float(finite.min()) if finite.size else 0.0
    out = np.full(shape, fill, dtype=np.float32)
    src, dst = [], []
    for size, target in zip(vol.shape, shape):
        if size >= target:
            start = (size - target) // 2
            src.append(slice(start, start + target))
            dst.append(slice(0, target))
        else:
            start = (target - size) // 2
            src.append(slice(0, size))
            dst.append(slice(start, start + size))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def resize(vol: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear resampling of the whole volume to `shape` (F.interpolate, align_corners=False)."""
    t = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=False)[0, 0].numpy()


def load_volume(
    path: str | Path,
    shape: tuple[int, int, int],
    normalize_how: str | None = "zscore",
    mask_threshold: float | None = None,
    resize_how: str = "crop_or_pad",
    npz_key: str | None = None,
) -> np.ndarray:
    """read_volume -> normalize (on the full field of view) -> crop_or_pad or resize: float32 `shape`."""
    vol = normalize(read_volume(path, npz_key), normalize_how, mask_threshold, where=str(path))
    if vol.shape != tuple(shape):
        vol = crop_or_pad(vol, shape) if resize_how == "crop_or_pad" else resize(vol, shape)
    return np.ascontiguousarray(vol, dtype=np.float32)
