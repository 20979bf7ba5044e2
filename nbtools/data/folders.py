"""Folder datasets: 3D volumes from class-per-subfolder or a CSV, and 2D images for albumentations."""

from __future__ import annotations

import csv as csv_module
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nbtools.data.cache import VolumeCache
from nbtools.data.volumes import NORMALIZE, RESIZE, VOLUME_SUFFIXES, load_volume, volume_suffix

log = logging.getLogger(__name__)

LAYOUT = """expected layout, one folder per class (sorted names give labels 0, 1, ...):
    {root}/
        negative/case_001.npy
        positive/case_002.nii.gz
  (files may sit in subfolders of a class folder; .npy, .npz, .nii, .nii.gz),
or pass csv= a file with a header row `path,label` (paths relative to root, labels 0, 1, ... or class names)"""


class VolumeFolder(Dataset):
    """Map-style dataset of ``(x, y)``: x float32 tensor (1, *shape), y int, from volume files on disk.

    root: a folder with one subfolder per class (root/<class_name>/**/*.npy|.npz|.nii|.nii.gz), or
    the folder that relative paths in `csv` start from. csv: a file with columns `path,label`; labels
    are all integers >= 0 or all class names. shape: (D, H, W) of every sample.
    normalize: "zscore" (per volume; inside the foreground voxels > mask_threshold when given),
    "minmax" (to [0, 1]) or None. resize: "crop_or_pad" (centred) or "resize" (trilinear).
    cache_dir: keep preprocessed volumes there (see VolumeCache): a changed file or changed
    preprocessing is rebuilt, never served stale. npz_key: the array to take from .npz files (default:
    the first). `.classes`, `.labels` (int64 array), `.paths` describe the samples.

    >>> ds = VolumeFolder("data/train", shape=(64, 64, 64), mask_threshold=0.0, cache_dir="cache")  # doctest: +SKIP
    >>> x, y = ds[0]; x.shape                                                                   # doctest: +SKIP
    torch.Size([1, 64, 64, 64])
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
    ) -> None:
        shape = tuple(shape)
        if len(shape) != 3 or any(not isinstance(s, (int, np.integer)) or s < 1 for s in shape):
            raise ValueError(f"shape must be 3 positive ints (D, H, W), got {shape!r}")
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        if resize not in RESIZE:
            raise ValueError(f"resize must be one of {RESIZE}, got {resize!r}")
        self.root = Path(root)
        self.shape = tuple(int(s) for s in shape)
        self.normalize, self.mask_threshold, self.resize, self.npz_key = (
            normalize,
            mask_threshold,
            resize,
            npz_key,
        )
        if csv is None:
            self.paths, labels, self.classes = _scan_folders(self.root)
        else:
            self.paths, labels, self.classes = _read_csv(self.root, Path(csv))
        self.labels = np.asarray(labels, dtype=np.int64)
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
        if self.cache is not None:
            vol = self.cache.get(path, self.config, lambda: self._load(path))
        else:
            vol = torch.from_numpy(self._load(path))
        return vol.unsqueeze(0), int(self.labels[index])

    def _load(self, path: Path) -> np.ndarray:
        return load_volume(path, self.shape, self.normalize, self.mask_threshold, self.resize, self.npz_key)

    def __repr__(self) -> str:
        counts = Counter(self.labels.tolist())
        per = ", ".join(f"{c}: {counts.get(i, 0)}" for i, c in enumerate(self.classes))
        return f"VolumeFolder({str(self.root)!r}, {len(self)} volumes, shape {self.shape}, classes {{{per}}})"


def _volume_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and volume_suffix(p) and not p.name.startswith(".")
    )


def _scan_folders(root: Path) -> tuple[list[Path], list[int], list[str]]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; " + LAYOUT.format(root=root))
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        loose = [p.name for p in root.iterdir() if p.is_file() and volume_suffix(p)]
        hint = (
            f" (it holds {len(loose)} volume files directly, e.g. {loose[0]}: move them into class folders)"
            if loose
            else ""
        )
        raise ValueError(f"{root} has no class subfolders{hint}; " + LAYOUT.format(root=root))
    paths, labels, empty = [], [], []
    for label, d in enumerate(subdirs):
        files = _volume_files(d)
        if not files:
            empty.append(d)
        paths += files
        labels += [label] * len(files)
    if empty:
        others = Counter(
            "".join(p.suffixes) or p.name for d in empty for p in d.rglob("*") if p.is_file()
        ).most_common(3)
        found = f" (found {', '.join(f'{n} {s}' for s, n in others)})" if others else " (empty)"
        raise ValueError(
            f"class folder{'s' if len(empty) > 1 else ''} {', '.join(str(d) for d in empty)} hold{'s' if len(empty) == 1 else ''} "
            f"no {'/'.join(VOLUME_SUFFIXES)} files{found}; " + LAYOUT.format(root=root)
        )
    return paths, labels, [d.name for d in subdirs]


def _read_csv(root: Path, csv_path: Path) -> tuple[list[Path], list[int], list[str]]:
    if not csv_path.is_file() and (root / csv_path).is_file():
        csv_path = root / csv_path
    if not csv_path.is_file():
        raise FileNotFoundError(f"CSV {csv_path} does not exist")
    with open(csv_path, newline="") as f:
        reader = csv_module.DictReader(f)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "path" not in columns or "label" not in columns:
            raise ValueError(
                f"{csv_path} needs a header row with columns path,label; found {reader.fieldnames}"
            )
        reader.fieldnames = columns
        rows = [(n, r) for n, r in enumerate(reader, start=2)]  # row 1 is the header
    if not rows:
        raise ValueError(f"{csv_path} has a header but no rows; add one row per volume: path,label")
    paths, raw, bad = [], [], []
    for n, row in rows:
        rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        path = Path(rel) if Path(rel).is_absolute() else root / rel
        if not rel:
            bad.append(f"row {n}: empty path")
        elif volume_suffix(path) is None:
            bad.append(f"row {n}: {rel} is not a {'/'.join(VOLUME_SUFFIXES)} file")
        elif not path.is_file():
            bad.append(f"row {n}: file {path} does not exist")
        kind = _label_kind(label)
        if kind not in ("int", "name"):
            bad.append(f"row {n}: {kind}")
        paths.append(path)
        raw.append((n, label, kind))
    numeric = [(n, lab) for n, lab, kind in raw if kind == "int"]
    names = [(n, lab) for n, lab, kind in raw if kind == "name"]
    if numeric and names:
        odd = names if len(names) <= len(numeric) else numeric
        rows_odd = ", ".join(str(n) for n, _ in odd[:5])
        bad.append(f"rows {rows_odd}: labels mix numbers and class names (e.g. {odd[0][1]!r}); use one kind")
    if bad:
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(
            f"{csv_path}: {len(bad)} bad row{'s' * (len(bad) > 1)}:\n  " + "\n  ".join(bad[:10]) + more
        )
    if numeric:
        labels = [int(lab) for _, lab, _ in raw]
        classes = [str(i) for i in range(max(labels) + 1)]
    else:
        classes = sorted({lab for _, lab, _ in raw})
        labels = [classes.index(lab) for _, lab, _ in raw]
    return paths, labels, classes


def _label_kind(label: str) -> str:
    """ "int" (0, 1, ...), "name" (a class name), or what is wrong with the label."""
    if not label:
        return "empty label"
    if re.fullmatch(r"[+-]?\d+", label):
        return "int" if int(label) >= 0 else f"label {label} is negative; use 0, 1, ... or class names"
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+)(e[+-]?\d+)?|[+-]?(nan|inf)", label, flags=re.IGNORECASE):
        return f"label {label!r} is not a whole number or a class name"
    return "name"


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3): what albumentations takes."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def image_folder(root: str | Path, transform=None):
    """torchvision ImageFolder (root/<class_name>/*.png|jpg|...) whose samples are uint8 HWC numpy
    arrays, so an albumentations pipeline applies directly: `transform(img)` gets the array and
    returns what the sample becomes (e.g. `lambda img: compose(image=img)["image"]`).

    >>> ds = image_folder("data/docs", transform=lambda img: aug(image=img)["image"])  # doctest: +SKIP
    """
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder; expected {root}/<class_name>/<image>.png (or .jpg, ...)"
        )
    return ImageFolder(str(root), transform=transform, loader=load_rgb)
