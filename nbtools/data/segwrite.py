"""Write a segmentation dataset to disk as real files, in any layout SegmentationFolder reads: NIfTI
volumes (nibabel, with a non-identity affine, as scanners write them) or PNG images and masks.

Notebook 06 turns the embedded synthetic set into a folder this way, so the cells that read a user's
folder run offline on the same code path; the tests write every layout with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

LAYOUTS = ("images/labels", "images/masks", "nnunet", "csv")
# 1.2 x 0.9 x 2.0 mm voxels, not at the origin: a reader that drops or swaps the affine shows up
AFFINE = np.array(
    [[1.2, 0.0, 0.0, -30.0], [0.0, 0.9, 0.0, -20.0], [0.0, 0.0, 2.0, 10.0], [0.0, 0.0, 0.0, 1.0]]
)
SCANNER_UNITS = (1000.0, 100.0)  # z-scored volumes are written as 1000 + 100 x: int16, like CT/MR files
_PALETTE = [0, 0, 0, 230, 25, 75, 60, 180, 75, 255, 225, 25, 0, 130, 200, 245, 130, 48]


def write_segmentation_folder(
    dataset,
    root: str | Path,
    layout: str = "images/labels",
    *,
    affine: np.ndarray | None = None,
    palette: bool = False,
) -> Path:
    """Write every ``(x, mask)`` of `dataset` under `root` as case_000, case_001, ...; returns the path to
    give SegmentationFolder (root, or the CSV for layout="csv").

    Volumes (x (C, D, H, W) float): NIfTI .nii.gz, image int16 in scanner-like units (1000 + 100 x),
    mask uint8, both with `affine` (default AFFINE). Images: x must be uint8 (H, W, 3) (a dataset with
    raw=True), written as PNG; masks as grey PNGs, or with palette=True as palette PNGs whose indices are
    the class ids. layout: "images/labels" (or "images/masks"); "nnunet" (imagesTr/{case}_0000.nii.gz,
    one file per channel, labelsTr/, dataset.json with the dataset's classes, nnU-Net v2 form); "csv"
    (images/ and labels/ plus data.csv listing image,mask).

    >>> path = write_segmentation_folder(SyntheticSegVolumes(8), "data/seg")      # doctest: +SKIP
    >>> ds = SegmentationFolder(path, patch=(32, 32, 32))                           # doctest: +SKIP
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    root = Path(root)
    affine = AFFINE if affine is None else np.asarray(affine, dtype=np.float64)
    nnunet = layout == "nnunet"
    image_dir = root / ("imagesTr" if nnunet else "images")
    mask_dir = root / ("labelsTr" if nnunet else "masks" if layout == "images/masks" else "labels")
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    rows, channels, ending = ["image,mask"], 1, ".png"
    for i in range(len(dataset)):
        x, mask = dataset[i][:2]
        x, mask = _numpy(x), _numpy(mask).astype(np.int64)
        case = f"case_{i:03d}"
        if x.ndim == 4:  # (C, D, H, W)
            ending, channels = ".nii.gz", x.shape[0]
            if channels > 1 and not nnunet:
                raise ValueError(
                    f"case {i} has {channels} channels: only layout='nnunet' writes one file per channel"
                )
            for k, vol in enumerate(x):
                units = np.round(SCANNER_UNITS[0] + SCANNER_UNITS[1] * vol).astype(np.int16)
                _nifti(
                    units, affine, image_dir / (f"{case}_{k:04d}{ending}" if nnunet else f"{case}{ending}")
                )
            _nifti(mask.astype(np.uint8), affine, mask_dir / f"{case}{ending}")
        elif x.ndim == 3 and x.dtype == np.uint8 and x.shape[2] == 3:
            _png(x, image_dir / (f"{case}_0000.png" if nnunet else f"{case}.png"))
            _mask_png(mask, mask_dir / f"{case}.png", palette)
        else:
            raise ValueError(
                f"case {i}: x of shape {x.shape}, dtype {x.dtype}: expected a volume (C, D, H, W) or a uint8 RGB "
                f"image (H, W, 3) (build the 2D dataset with raw=True)"
            )
        rows.append(f"{image_dir.name}/{case}{ending},{mask_dir.name}/{case}{ending}")
    if nnunet:
        classes = list(getattr(dataset, "classes", None) or _classes(dataset))
        meta = {
            "channel_names": {str(k): f"channel_{k}" for k in range(channels)},
            "labels": {name: i for i, name in enumerate(classes)},
            "numTraining": len(dataset),
            "file_ending": ending,
        }
        (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    if layout == "csv":
        (root / "data.csv").write_text("\n".join(rows) + "\n")
        return root / "data.csv"
    return root


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _classes(dataset) -> list[str]:
    top = max(int(_numpy(dataset[i][1]).max()) for i in range(len(dataset)))
    return ["background"] + [f"class_{c}" for c in range(1, top + 1)]


def _nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, affine), str(path))


def _png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(image).save(path)


def _mask_png(mask: np.ndarray, path: Path, palette: bool) -> None:
    from PIL import Image

    if mask.max() > 255:
        raise ValueError(f"{path}: class ids above 255 do not fit an 8-bit PNG mask")
    array = np.ascontiguousarray(mask, dtype=np.uint8)
    if palette:  # the pixels are the palette indices, i.e. the class ids; the palette only colours them
        im = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        im.putpalette(_PALETTE + [128] * (768 - len(_PALETTE)))
    else:
        im = Image.fromarray(array)
    im.save(path)
