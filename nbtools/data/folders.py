"""VolumeFolder: 3D volumes from class sub-folders, a `path,label` CSV, or unlabelled files to predict on."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nbtools.data.cache import VolumeCache
from nbtools.data.sources import FileKind, list_files
from nbtools.data.volumes import NORMALIZE, RESIZE, VOLUME_SUFFIXES, VolumeReadError, load_volume

log = logging.getLogger(__name__)

VOLUMES = FileKind("volume", VOLUME_SUFFIXES, ("case_001.npy", "case_002.nii.gz"))


class VolumeFolder(Dataset):
    """Map-style dataset of ``(x, y)``: x float32 tensor (1, *shape), y int, from volume files on disk.

    root: a folder with one subfolder per class (root/<class_name>/**/*.npy|.npz|.nii|.nii.gz), the
    folder that relative paths in `csv` start from, or the CSV file itself. csv: a file with columns
    `path,label`; labels are all integers >= 0 or all class names; a relative path is looked up under
    root, then under the CSV's folder. shape: (D, H, W) of every sample.
    labels: "required" (the default, for training: class folders or a label column, else an error that
    shows the layout), "auto" (for prediction: files directly in root, or a CSV without a label column,
    give an unlabelled dataset; labelled sources read as with "required") or "ignore" (every volume
    under root, or the CSV's paths, unlabelled). Unlabelled: `.labeled` is False, `.labels` are -1 and
    items are ``(x, -1)``. classes: pin the class names, e.g. to a training run's `classes`, so that a
    validation or prediction folder maps names to the same indices (a CSV's integer labels index
    them); a class folder or CSV label outside them is an error naming it. Without it, sorted folder
    names (or CSV names; 0..max for integer labels) give the classes, and unlabelled data has none.
    normalize: "zscore" (per volume; inside the foreground voxels > mask_threshold when given),
    "minmax" (to [0, 1]) or None. resize: "crop_or_pad" (centred) or "resize" (trilinear).
    cache_dir: keep preprocessed volumes there (see VolumeCache): a changed file or changed
    preprocessing is rebuilt, never served stale. npz_key: the array to take from .npz files (default:
    the first). `.classes`, `.labels` (int64 array), `.paths`, `.labeled`, `.root` describe the samples.
    A file that cannot be read raises VolumeReadError (an OSError) naming it and what to do.

    >>> ds = VolumeFolder("data/train", shape=(64, 64, 64), mask_threshold=0.0, cache_dir="cache")  # doctest: +SKIP
    >>> x, y = ds[0]; x.shape                                                                   # doctest: +SKIP
    torch.Size([1, 64, 64, 64])
    >>> new = VolumeFolder("data/new", shape=(64, 64, 64), labels="auto", classes=ds.classes)   # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | Path,
        shape: tuple[int, int, int],
        csv: str | Path | None = None,
        normalize: str | None = "zscore",
        mask_threshold: float | None = None,
        resize: str = "crop_or_pad",
        cache_dir: str | Path | None = None,
        npz_key: str | None = None,
        labels: str = "required",
        classes: Sequence[str] | None = None,
    ) -> None:
        shape = tuple(shape)
        if len(shape) != 3 or any(not isinstance(s, (int, np.integer)) or s < 1 for s in shape):
            raise ValueError(f"shape must be 3 positive ints (D, H, W), got {shape!r}")
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        if resize not in RESIZE:
            raise ValueError(f"resize must be one of {RESIZE}, got {resize!r}")
        self.shape = tuple(int(s) for s in shape)
        self.normalize, self.mask_threshold, self.resize, self.npz_key = (
            normalize,
            mask_threshold,
            resize,
            npz_key,
        )
        found = list_files(root, csv, VOLUMES, labels, classes)
        self.root, self.paths, self.classes, self.labeled = (
            found.root,
            found.paths,
            found.classes,
            found.labeled,
        )
        self.labels = np.asarray(found.labels, dtype=np.int64)
        self.cache = VolumeCache(cache_dir) if cache_dir is not None else None
        log.info("%r", self)

    @property
    def config(self) -> dict[str, Any]:
        """The preprocessing, as the cache fingerprints it."""
        return {
            "shape": list(self.shape),
            "normalize": self.normalize,
            "mask_threshold": self.mask_threshold,
            "resize": self.resize,
            "npz_key": self.npz_key,
            "version": 1,  # bump when load_volume's output changes for the same arguments
        }

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        try:
            if self.cache is not None:
                vol = self.cache.get(path, self.config, lambda: self._load(path))
            else:
                vol = torch.from_numpy(self._load(path))
        except FileNotFoundError as e:  # the cache stats the file before reading it
            if path.exists():
                raise
            raise VolumeReadError(
                f"{path} (sample {index}) no longer exists; it was there when the dataset was built: "
                f"restore it, or build the dataset again without it"
            ) from e
        return vol.unsqueeze(0), int(self.labels[index])

    def _load(self, path: Path) -> np.ndarray:
        return load_volume(path, self.shape, self.normalize, self.mask_threshold, self.resize, self.npz_key)

    def __repr__(self) -> str:
        head = f"VolumeFolder({str(self.root)!r}, {len(self)} volumes, shape {self.shape}"
        if not self.labeled:
            return head + ", unlabelled)"
        counts = Counter(self.labels.tolist())
        per = ", ".join(f"{c}: {counts.get(i, 0)}" for i, c in enumerate(self.classes))
        return f"{head}, classes {{{per}}})"
