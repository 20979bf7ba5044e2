"""SegmentationFolder: image/mask pairs from disk as ``(x float32 (C, *spatial), mask int64 (*spatial))``,
random patches with foreground oversampling for training, whole cases for validation by sliding window."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nbtools.data.augment2d import to_tensor
from nbtools.data.cache import VolumeCache
from nbtools.data.patches import PatchBox, choose_box, cut, needed_pad
from nbtools.data.segcache import cached_pair, normalized_image
from nbtools.data.segcheck import pinned_classes, scan_cases
from nbtools.data.seglayout import find_cases, select_cases
from nbtools.data.segread import read_image, read_mask, resize_pair
from nbtools.data.splits import holdout_split, kfold
from nbtools.data.synthetic import item_index

log = logging.getLogger(__name__)

NORMALIZE = ("auto", "zscore", "minmax", "imagenet", None)
AUTO_PATCH = {3: (64, 64, 64), 2: (256, 256)}


class SegmentationFolder(Dataset):
    """Map-style dataset of ``(x, mask)``: x float32 (C, *spatial), mask int64 (*spatial) class ids.

    root: `DIR/images/` + `DIR/labels/` (or `DIR/masks/`) with matching names; nnU-Net's raw layout
    (`imagesTr/{case}_0000.nii.gz` one file per channel, stacked into C; `labelsTr/{case}.nii.gz`;
    `dataset.json` naming the labels, v2 `{"background": 0, ...}` or v1 `{"0": "background", ...}`); or a
    CSV with columns `image,mask` (paths relative to the CSV; or pass csv=). 3D: .nii.gz/.nii/.npy; 2D:
    PNG/JPEG images (RGB, C=3; nnU-Net 2D: one grey PNG per channel) with PNG masks (grey values, or a
    palette PNG's indices). A case is its file name without the extension.

    patch: a spatial size for random training patches, or None for whole cases (validation: evaluate by
    sliding window). "auto": (64, 64, 64) for volumes, (256, 256) for images, no side larger than the
    largest case's; None with size=. Cases smaller than the patch are padded (image with each channel's
    minimum, mask with 0; `pads` records how much). oversample: the fraction of patches centred on a random foreground voxel (nnU-Net: 1/3;
    see `nbtools.data.patches`). seed, `set_epoch(epoch)`: with an epoch set, the patch of item i is a
    function of (seed, epoch, i) alone, whatever the workers or a resume; without one, each item draws
    its patch's seed from torch's global RNG, as AlbumentationsDataset does (seeded per worker and
    epoch by the DataLoader, saved in fit's checkpoints). classes: the class names (index = id);
    default: dataset.json's labels, else "background", "class_1", ... up to the largest id found.
    normalize: "auto" (z-score per channel for volumes, ImageNet mean/std for RGB images), "zscore",
    "minmax", "imagenet" or None; statistics of the whole case, before the patch is cut. size: resize 2D
    images (INTER_AREA) and masks (nearest) to size x size. masks: "required", or "optional" to predict
    on images without masks (their items are ``(x, -1)``). cases: keep only these case names (a run's
    record). raw: 2D only, items ``(uint8 (H, W, C), int64 (H, W) numpy)`` for
    ``AlbumentationsDataset(ds, transform)``, which moves the mask with the image and normalises last.
    cache_dir: 3D only, keep each case's normalised image and mask there (see `segcache`).

    Construction reads every mask and every image header and raises SegmentationDataError (a ValueError)
    naming each bad case: a missing mask or image, shape or affine mismatch, class ids outside the
    classes, float masks, missing nnU-Net channels, an empty folder.

    >>> ds = SegmentationFolder("drive/MyDrive/brains", patch=(64, 64, 64))         # doctest: +SKIP
    >>> train, val = ds.split(fraction=0.2, seed=0)    # val: whole cases (patch=None)  # doctest: +SKIP
    >>> x, mask = train[0]; x.shape, mask.shape, ds.classes                           # doctest: +SKIP
    (torch.Size([1, 64, 64, 64]), torch.Size([64, 64, 64]), ['background', 'grey_matter', 'white_matter'])
    """

    def __init__(
        self,
        root: str | Path,
        patch: Sequence[int] | str | None = "auto",
        *,
        csv: str | Path | None = None,
        classes: Sequence[str] | None = None,
        oversample: float = 1 / 3,
        seed: int = 0,
        normalize: str | None = "auto",
        size: int | None = None,
        masks: str = "required",
        cases: Sequence[str] | None = None,
        raw: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        if not 0.0 <= oversample <= 1.0:
            raise ValueError(f"oversample must be a fraction in [0, 1] (nnU-Net: 1/3), got {oversample!r}")
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        layout = find_cases(root, csv, masks)
        self.root, self.layout, self.ndim = layout.root, layout.kind, layout.ndim
        self.csv = None if csv is None and layout.kind != "csv" else str(csv or root)
        self._check_2d_options(size, raw)
        found = layout.cases if cases is None else select_cases(layout, cases)
        facts = scan_cases(found, pinned_classes(classes, layout.classes, root), Path(csv or root))
        self._cases, self.shapes, self.affines = found, facts.shapes, facts.affines
        self.class_voxels, self.channels, self.classes = facts.class_voxels, facts.channels, facts.classes
        self.mask_digests = facts.mask_digests
        if normalize == "auto":
            normalize = "zscore" if self.ndim == 3 or self.channels != 3 else "imagenet"
        if normalize == "imagenet" and (self.ndim != 2 or self.channels != 3):
            raise ValueError(
                f"normalize='imagenet' is for RGB images; these are {self.ndim}D with {self.channels} channels"
            )
        self.normalize, self.size, self.raw = normalize, size, bool(raw)
        self.cache = VolumeCache(cache_dir) if cache_dir is not None and self.ndim == 3 else None
        self.oversample, self.seed, self.epoch = float(oversample), int(seed), None
        self.labeled = all(c.mask is not None for c in self._cases)
        self.patch = self._patch(patch)
        log.info("%r", self)
        small = [f"{c.name} {s}" for c, s, p in zip(self._cases, self.sizes, self.pads) if any(p)]
        if small:
            log.info("%d cases, smaller than the patch %s, are padded: %s", len(small), self.patch, small[:5])

    def _check_2d_options(self, size, raw) -> None:
        if self.ndim == 3 and (size is not None or raw):
            raise ValueError("size= and raw=True are for 2D images (PNG/JPEG); these are 3D volumes")
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1
        ):
            raise ValueError(f"size must be an int >= 1 (images become size x size), got {size!r}")

    def _patch(self, patch) -> tuple[int, ...] | None:
        if isinstance(patch, str) and patch == "auto":  # no larger than the largest case: no pure padding
            return None if self.size is not None else tuple(map(min, AUTO_PATCH[self.ndim], *self.shapes))
        if patch is None:
            return None
        patch = tuple(patch)
        if len(patch) != self.ndim or any(
            isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1 for p in patch
        ):
            raise ValueError(
                f"patch must be {self.ndim} positive ints for these {self.ndim}D cases, or None, got {patch!r}"
            )
        return tuple(int(p) for p in patch)

    # -- what the cases are ------------------------------------------------------------------
    @property
    def cases(self) -> list[str]:
        return [c.name for c in self._cases]

    @property
    def image_paths(self) -> list[tuple[Path, ...]]:
        return [c.images for c in self._cases]

    @property
    def mask_paths(self) -> list[Path | None]:
        return [c.mask for c in self._cases]

    @property
    def paths(self) -> list[Path]:
        """The (first channel's) image file of each case: how errors name a sample."""
        return [c.images[0] for c in self._cases]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def sizes(self) -> list[tuple[int, ...]]:
        """Spatial shape of each case as an item gives it (after size=, before the patch)."""
        return [(self.size, self.size) if self.size else s for s in self.shapes]

    @property
    def pads(self) -> list[tuple[int, ...]]:
        """Voxels of padding each case needs per axis to hold the patch (zeros without a patch)."""
        return [needed_pad(s, self.patch) if self.patch else (0,) * self.ndim for s in self.sizes]

    @property
    def record(self) -> dict[str, Any]:
        """Plain JSON to rebuild exactly this dataset (`from_record`); with `data_fingerprint` it is what
        a run records so that a resume reads the same cases."""
        return {
            "kind": "segmentation",
            "root": str(self.root),
            "csv": self.csv,
            "layout": self.layout,
            "ndim": self.ndim,
            "patch": list(self.patch) if self.patch else None,
            "oversample": self.oversample,
            "seed": self.seed,
            "normalize": self.normalize,
            "size": self.size,
            "classes": list(self.classes),
            "channels": self.channels,
            "labeled": self.labeled,
            "cases": self.cases,
        }

    @classmethod
    def from_record(
        cls, record: dict[str, Any], root: str | Path | None = None, **changes: Any
    ) -> SegmentationFolder:
        """The dataset a `record` describes (root: where the folder is now, e.g. Drive mounted elsewhere)."""
        csv = record["csv"]
        if csv is not None and root is not None:  # the CSV moved with its folder
            inside = Path(csv).is_relative_to(record["root"])
            csv = Path(root) / (Path(csv).relative_to(record["root"]) if inside else Path(csv).name)
        args = dict(
            patch=record["patch"],
            csv=csv,
            classes=record["classes"],
            oversample=record["oversample"],
            seed=record["seed"],
            normalize=record["normalize"],
            size=record["size"],
            masks="required" if record["labeled"] else "optional",
            cases=record["cases"],
        )
        args.update(changes)
        return cls(root if root is not None else record["root"], **args)

    # -- views -------------------------------------------------------------------------------
    def subset(
        self, indices: Sequence[int], patch: Sequence[int] | str | None = "same"
    ) -> SegmentationFolder:
        """A view of these cases (indices into this dataset) without reading them again; patch: "same",
        a new patch, or None for whole cases."""
        view = copy.copy(self)
        idx = [int(i) for i in indices]
        view._cases = [self._cases[i] for i in idx]
        view.shapes = [self.shapes[i] for i in idx]
        view.affines = [self.affines[i] for i in idx]
        view.class_voxels = self.class_voxels[idx]
        view.mask_digests = [self.mask_digests[i] for i in idx]
        view.labeled = all(c.mask is not None for c in view._cases)
        if not (isinstance(patch, str) and patch == "same"):
            view.patch = view._patch(patch)
        return view

    def split(self, fraction: float = 0.2, *, k: int | None = None, fold: int = 0, seed: int = 0):
        """(train, val) views split by case: a hold-out of `fraction` (`holdout_split`), or with k= fold
        `fold` of a k-fold (`kfold`). The split depends on (the cases, fraction or k, seed) only, so a
        resume rebuilds it. train keeps the patch; val gives whole cases (patch=None)."""
        if len(self) < 2:
            raise ValueError(f"a split needs at least 2 cases, this dataset has {len(self)}")
        groups = np.zeros(len(self), dtype=np.int64)  # one group: cases carry no class label to stratify by
        tr, va = kfold(groups, k, fold, seed) if k is not None else holdout_split(groups, fraction, seed)
        return self.subset(tr), self.subset(va, patch=None)

    def set_epoch(self, epoch: int) -> None:
        """Patches of this epoch (see the class doc); `fit` calls it before each epoch's loader is built."""
        self.epoch = int(epoch)

    # -- items -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._cases)

    def patch_box(self, index: int, epoch: int | None = None, mask: np.ndarray | None = None) -> PatchBox:
        """The patch box item `index` gets at `epoch` (default: the epoch set); needs an epoch."""
        epoch = self.epoch if epoch is None else epoch
        if self.patch is None or epoch is None:
            raise ValueError("patch_box needs a patch and an epoch (set_epoch, or epoch=)")
        if mask is None:
            mask = self._load(index)[1]
        return choose_box(
            mask, self.patch, np.random.default_rng([self.seed, int(epoch), index]), self.oversample
        )

    def __getitem__(self, index: int):
        index = item_index(index, self)
        image, mask = self._load(index)
        channel_axis = -1 if self.raw else 0
        if self.patch is not None:
            if self.epoch is None:  # the global RNG: see the class doc
                rng = np.random.default_rng([self.seed, int(torch.randint(0, 2**62, ()))])
                box = choose_box(mask, self.patch, rng, self.oversample)
            else:
                box = self.patch_box(index, mask=mask)
            fill = image.min(axis=tuple(a for a in range(image.ndim) if a != channel_axis % image.ndim))
            image, mask = cut(image, box, fill, channel_axis), cut(mask, box, 0, None)
        label = mask if self._cases[index].mask is not None else -1
        if self.raw:
            return image, label
        return torch.from_numpy(image), (torch.from_numpy(label) if isinstance(label, np.ndarray) else label)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask) of a case, resized and normalised; the mask zeros when the case has none."""
        case = self._cases[index]
        if self.cache is not None:
            return cached_pair(self.cache, case, self.shapes[index], self.normalize)
        image = read_image(case.images)
        mask = read_mask(case.mask) if case.mask is not None else np.zeros(self.shapes[index], np.int64)
        if self.size is not None:
            image, mask = resize_pair(image, mask, self.size)
        if self.raw:
            return image, mask
        if self.normalize == "imagenet":
            return to_tensor(image).numpy(), mask
        return normalized_image(image, self.ndim, self.normalize, str(case.images[0])), mask

    def __repr__(self) -> str:
        fg = self.class_voxels.sum(axis=0)
        share = fg / max(1, fg.sum())
        per = ", ".join(f"{c}: {s:.2%}" for c, s in zip(self.classes, share))
        return (
            f"SegmentationFolder({str(self.root)!r}, {self.layout}, {len(self)} cases, {self.ndim}D, "
            f"{self.channels} channel{'s' * (self.channels != 1)}, patch {self.patch}, classes {{{per}}})"
        )
