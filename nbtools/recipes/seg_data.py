"""The user's own image/mask pairs for a segmentation recipe: a `SegmentationFolder` (images/ + labels/,
nnU-Net's layout, or an `image,mask` CSV), a second one for validation or a hold-out of its cases, and
what the run records of it, so a resume rebuilds exactly those cases and refuses a changed mask.

The record has the keys of a classification run's (see user_data: source, classes, positive None, split,
fingerprint, file_check) plus "kind": "segmentation", the case layout and the image channels. The
fingerprint lists every image and mask with a digest of each mask's class ids (data.fingerprint), so a
mask edited in place is a change even at the same file size. The hold-out is by case, and the digest of
the validation cases' names (split "val_sha256") says whether a resume holds out the same ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from nbtools.data import SegmentationFolder, data_fingerprint
from nbtools.recipes.user_data import UserData


def _resolved(path: str | Path | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def cases_digest(cases: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(cases).encode()).hexdigest()


def build_seg_data(
    data: str | Path,
    val: str | Path | None,
    fraction: float,
    seed: int,
    patch: Sequence[int] | None,
    size: int | None = None,
    raw: bool = False,
) -> UserData:
    """Read `data` (and `val`) as SegmentationFolders: every mask and image header is read here and a bad
    case raises SegmentationDataError naming it (a mask missing for an image or the reverse, a shape or
    affine mismatch, ids outside the classes, float masks, an empty folder).

    Training items are random `patch`es (with foreground oversampling, `seed`); validation items whole
    cases, evaluated by sliding window. val None: a hold-out of `fraction` of the cases (seed `seed`).
    size, raw: 2D only (images resized to size x size; raw uint8 items for an albumentations pipeline).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction!r}")
    options = dict(size=size, raw=raw) if size is not None or raw else {}
    folder = SegmentationFolder(data, patch=patch, seed=seed, **options)
    if val is None:
        train, val_part = folder.split(fraction=fraction, seed=seed)
        val_folder = None
        split = {"kind": "holdout", "fraction": fraction, "seed": seed}
    else:
        val_folder = SegmentationFolder(val, patch=None, classes=folder.classes, **options)
        if val_folder.channels != folder.channels:
            raise ValueError(
                f"val={str(val)!r} has {val_folder.channels} image channels, data={str(data)!r} "
                f"{folder.channels}: the model takes one number of channels"
            )
        train, val_part, split = folder, val_folder, {"kind": "folder"}
    split.update(n_train=len(train), n_val=len(val_part), val_sha256=cases_digest(val_part.cases))
    record = {
        "kind": "segmentation",
        "source": {
            "data": str(data),
            "data_resolved": _resolved(data),
            "val": None if val is None else str(val),
            "val_resolved": _resolved(val),
        },
        "classes": list(folder.classes),
        "positive": None,
        "layout": folder.layout,
        "channels": folder.channels,
        "ndim": folder.ndim,
        "split": split,
        "fingerprint": {
            "train": data_fingerprint(folder),
            "val": None if val_folder is None else data_fingerprint(val_folder),
        },
    }
    return UserData(folder, val_folder, train, val_part, record)
