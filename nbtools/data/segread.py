"""Reading one segmentation case: the image channels as float32 (C, *spatial), the mask as int64 class
ids (*spatial), and the header facts the pairing checks need (shape, affine) without reading pixels.

3D: NIfTI through nibabel (stored axis order, header scaling applied, nothing reoriented), .npy/.npz.
2D: a PNG/JPEG image as RGB (`read_rgb`), or as one grey channel per nnU-Net channel file; a PNG mask
as grey values or as the indices of a palette PNG, which are the class ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nbtools.data.augment2d import resize_image
from nbtools.data.images import ImageReadError, read_rgb
from nbtools.data.segcases import IMAGE_2D, split_suffix
from nbtools.data.volumes import VolumeReadError, read_volume

# Image and mask must describe the same voxels: a tenth of a percent (or 1e-3 absolute, a micrometre
# for mm units) lets through float32 rounding of headers written by different tools, not a shift of a
# voxel, another spacing or a flipped axis.
AFFINE_RTOL, AFFINE_ATOL = 1e-3, 1e-3
_GREY_MODES = ("L", "P", "1", "I", "I;16", "I;16L", "I;16B", "I;16N")


def is_2d(path: str | Path) -> bool:
    return split_suffix(path)[1] in IMAGE_2D


def header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray | None]:
    """(spatial shape, 4x4 affine or None) of an image or mask file, read from its header only."""
    path = Path(path)
    if is_2d(path):
        from PIL import Image

        try:
            with Image.open(path) as im:
                # read_rgb applies the EXIF orientation: these turn the picture by 90 degrees
                turned = im.getexif().get(0x0112) in (5, 6, 7, 8)
                return ((im.width, im.height) if turned else (im.height, im.width)), None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageReadError(f"cannot read {path} ({type(e).__name__}: {e}): export it again") from e
    suffix = split_suffix(path)[1]
    try:
        if suffix == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return _spatial(shape, path), None
        if suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            img = nib.load(str(path))
            return _spatial(img.shape, path), np.asarray(img.affine, dtype=np.float64)
    except (OSError, ValueError, EOFError) as e:
        raise VolumeReadError(
            f"cannot read the header of {path} ({type(e).__name__}: {e}): export it again"
        ) from e
    return read_volume(path).shape, None  # .npz has no header to read apart from its data


def _spatial(shape: tuple[int, ...], path: Path) -> tuple[int, ...]:
    """A volume's (D, H, W), dropping one singleton channel axis first or last, as read_volume does."""
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    elif len(shape) == 4 and shape[-1] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise VolumeReadError(f"{path} holds an array of shape {shape}; expected a 3D volume (D, H, W)")
    return tuple(int(s) for s in shape)


def read_mask(path: str | Path) -> np.ndarray:
    """The class ids in a mask file as int64 (*spatial). A float mask whose values are whole numbers is
    accepted; other values, negative ids or a colour PNG raise a ValueError naming the file and the fix."""
    path = Path(path)
    if is_2d(path):
        raw = _mask_png(path)
    elif split_suffix(path)[1] in (".nii", ".nii.gz"):
        import nibabel as nib

        # dataobj keeps the stored integer type; get_fdata would hand back float64 of every mask
        try:
            raw = np.asanyarray(nib.load(str(path)).dataobj)
        except (OSError, ValueError, EOFError) as e:
            raise VolumeReadError(f"cannot read {path} ({type(e).__name__}: {e}): export it again") from e
        raw = raw.reshape(_spatial(raw.shape, path))
    else:
        raw = np.load(path, allow_pickle=False) if split_suffix(path)[1] == ".npy" else read_volume(path)
        raw = raw.reshape(_spatial(raw.shape, path))
    return as_class_ids(raw, path)


def as_class_ids(raw: np.ndarray, path: Path) -> np.ndarray:
    if raw.dtype == bool:
        return raw.astype(np.int64)
    if raw.dtype.kind == "f":
        finite = np.isfinite(raw)
        if not finite.all():
            raise ValueError(f"mask {path} holds {int((~finite).sum())} NaN/Inf values: export it again")
        frac = raw != np.round(raw)
        if frac.any():
            v = float(raw[frac].flat[0])
            raise ValueError(
                f"mask {path} is a float mask with values that are not class ids (e.g. {v:g}, in "
                f"{int(frac.sum())} voxels): was it resampled with linear interpolation? Save class ids as "
                f"integers, resampled with nearest-neighbour"
            )
    elif raw.dtype.kind not in "iu":
        raise ValueError(f"mask {path} holds {raw.dtype} values, not class ids")
    if raw.size and raw.min() < 0:
        raise ValueError(f"mask {path} holds negative values (min {raw.min():g}); class ids are 0, 1, ...")
    return raw.astype(np.int64)


def _mask_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _GREY_MODES:  # "P": the array holds the palette indices, which are the class ids
                return np.array(im)
            if im.mode == "LA":
                return np.array(im)[..., 0]
            rgb = np.array(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read mask {path} ({type(e).__name__}: {e}): export it again") from e
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]  # grey values saved as RGB (cv2.imwrite of a 3-channel array)
    raise ValueError(
        f"mask {path} is a colour ({im.mode}) image: class ids must be grey values (0, 1, 2, ...) or the "
        f"indices of a palette PNG; map each colour to its class id and save it as a grey or palette PNG"
    )


def read_image(paths: tuple[Path, ...]) -> np.ndarray:
    """The image of a case: 3D float32 (C, D, H, W), one channel per file; 2D uint8 (H, W, C): one
    PNG/JPEG as RGB, or one grey channel per file (nnU-Net's 2D layout)."""
    if is_2d(paths[0]):
        if len(paths) == 1:
            return read_rgb(paths[0])
        return np.stack([_grey(p) for p in paths], axis=-1)
    return np.stack([read_volume(p) for p in paths])


def _grey(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert("L"))
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"cannot read {path} ({type(e).__name__}: {e}): export it again") from e


def image_channels(paths: tuple[Path, ...]) -> int:
    """Channels the image of a case gives: files (3D, or 2D nnU-Net), or 3 for one RGB PNG/JPEG."""
    return 3 if len(paths) == 1 and is_2d(paths[0]) else len(paths)


def same_affine(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is None or b is None or np.allclose(a, b, rtol=AFFINE_RTOL, atol=AFFINE_ATOL)


def describe_affine(a: np.ndarray) -> str:
    """Spacing and origin of an affine, what a user compares in a viewer."""
    spacing = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    return f"spacing {tuple(round(float(s), 4) for s in spacing)}, origin {tuple(round(float(o), 3) for o in a[:3, 3])}"


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (H, W, C) by INTER_AREA (as ImageFolder), the mask by nearest neighbour: no new class ids."""
    out = resize_image(image, size)
    out = out[..., None] if out.ndim == 2 else out  # cv2 drops a single channel
    h, w = mask.shape
    rows = np.minimum((np.arange(size) + 0.5) * h / size, h - 1).astype(np.intp)
    cols = np.minimum((np.arange(size) + 0.5) * w / size, w - 1).astype(np.intp)
    return out, np.ascontiguousarray(mask[rows[:, None], cols[None, :]])
