"""2D augmentation with albumentations on uint8 images, then ImageNet normalisation: in that order.

Gamma on normalised (z-scored) pixels is NaN below zero, and clipping to >= 0 to avoid that shifts the
data. Here intensity ops (brightness, contrast, gamma) see uint8
pixels, their own domain, and normalisation is the last step, done once, by `AlbumentationsDataset`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from nbtools.data.samples import labels_of

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PAPER_WHITE = 245  # fill for pixels an affine brings in from outside the page: a scanner bed, not black
_NOT_IN_PIPELINE = ("Normalize", "ToTensorV2")  # AlbumentationsDataset does these itself
# One interpolation for every resize of a page (ImageFolder and document_augmentation(size=...)), so a
# training and a prediction path see the same pixels: INTER_AREA averages every source pixel when it
# shrinks, so thin text strokes survive a scan going down to 224 px instead of aliasing away.
RESIZE_INTERPOLATION = cv2.INTER_AREA


def document_augmentation(train: bool = True, size: int | None = None, seed: int | None = None) -> Any:
    """An albumentations Compose for uint8 HWC document images (before normalisation).

    train=True: horizontal flip (p=0.5); affine (p=0.7) with rotation ±11.5°, shift ±8 % and scale
    ±8 %, filling the new corners with paper white; brightness/contrast ±10 % (p=0.5); gamma 0.8-1.2
    (p=0.5, safe: uint8 in, uint8 out). train=False: no random op. size: resize to size x size first
    (both modes), with cv2.INTER_AREA as `resize_image` and ImageFolder do. seed: the Compose's seed (AlbumentationsDataset reseeds it per item, see there).

    >>> train_ds = AlbumentationsDataset(SyntheticDocuments(512, raw=True), document_augmentation())  # doctest: +SKIP
    >>> x, y = train_ds[0]; x.shape, x.dtype                                                          # doctest: +SKIP
    (torch.Size([3, 128, 128]), torch.float32)
    """
    import albumentations as A

    ops = [] if size is None else [A.Resize(size, size, interpolation=RESIZE_INTERPOLATION)]
    if train:
        ops += [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                rotate=(-11.5, 11.5),
                translate_percent=(-0.08, 0.08),
                scale=(0.92, 1.08),
                border_mode=cv2.BORDER_CONSTANT,
                fill=_PAPER_WHITE,
                p=0.7,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
            A.RandomGamma(gamma_limit=(80, 120), p=0.5),
        ]
    return A.Compose(ops, seed=seed)


def segmentation_augmentation(train: bool = True, size: int | None = None, seed: int | None = None) -> Any:
    """An albumentations Compose for uint8 HWC images with a `mask` target (class ids), before normalisation.

    train=True: horizontal flip (p=0.5); affine (p=0.7) with rotation ±15°, shift ±8 %, scale ±10 %,
    new corners black in the image and background (0) in the mask; brightness/contrast ±10 % and gamma
    0.8-1.2 (p=0.5 each, image only). Geometric ops resample the mask with nearest neighbour (no class id
    is invented); size: resize to size x size first (image INTER_AREA, mask nearest). train=False: the
    resize only. `AlbumentationsDataset(SegmentationFolder(..., raw=True), segmentation_augmentation())`.
    """
    import albumentations as A

    ops = (
        []
        if size is None
        else [A.Resize(size, size, interpolation=RESIZE_INTERPOLATION, mask_interpolation=cv2.INTER_NEAREST)]
    )
    if train:
        ops += [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                rotate=(-15, 15),
                translate_percent=(-0.08, 0.08),
                scale=(0.9, 1.1),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                mask_interpolation=cv2.INTER_NEAREST,
                p=0.7,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
            A.RandomGamma(gamma_limit=(80, 120), p=0.5),
        ]
    return A.Compose(ops, seed=seed)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, C) -> (size, size, C) with cv2.INTER_AREA (see RESIZE_INTERPOLATION); an image already
    that size is returned as is. The aspect ratio is not kept: a page is stretched to the square."""
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=RESIZE_INTERPOLATION)


def is_albumentations(transform: Any) -> bool:
    try:
        import albumentations as A
    except ImportError:
        return False
    return isinstance(transform, (A.BaseCompose, A.BasicTransform))


def apply_transform(transform: Callable | None, image: np.ndarray, mask: np.ndarray | None = None):
    """`transform(image=image)["image"]` for an albumentations transform, `transform(image)` for any
    other callable, `image` for None. An albumentations transform is first reseeded from torch's global
    RNG, which a DataLoader seeds per worker and per epoch and `fit` saves with its checkpoints: so
    workers and epochs differ, `torch.manual_seed` reproduces a pass, and a resumed run repeats it.
    With a mask (H, W) of class ids: (image, mask), the mask passed as albumentations' `mask` target,
    so every geometric op moves it with the image (and intensity ops leave it alone)."""
    if mask is not None:
        if transform is None:
            return image, mask
        if not is_albumentations(transform):
            raise TypeError(
                f"a transform for image/mask pairs must be an albumentations transform (its `mask` target moves "
                f"the mask with the image); got {type(transform).__name__}"
            )
        transform.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))
        out = transform(image=image, mask=mask)
        return out["image"], out["mask"]
    if transform is None:
        return image
    if is_albumentations(transform):
        transform.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))
        return transform(image=image)["image"]
    return transform(image)


def to_tensor(
    image: Any, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 HWC (or HW) image, or float HWC in [0, 1], or a PIL image -> normalised float32 (C, H, W).

    A grayscale image is repeated to len(mean) channels.
    """
    if isinstance(image, torch.Tensor):
        raise TypeError(
            "expected a numpy HWC image, got a torch tensor: leave Normalize/ToTensorV2 out of the "
            "albumentations pipeline, AlbumentationsDataset normalises and converts once, at the end"
        )
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], len(mean), axis=2)
    if arr.ndim != 3 or arr.shape[2] != len(mean):
        raise ValueError(
            f"expected an image (H, W, {len(mean)}) or (H, W) to normalise with {len(mean)} channel means, "
            f"got shape {arr.shape}"
        )
    x = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class AlbumentationsDataset(Dataset):
    """Wrap a dataset of ``(image, label)`` (uint8 HWC numpy or PIL) into ``(x, label)``, x float32
    (3, H, W): the transform runs on the uint8 image, normalisation with `mean`/`std` comes last. A
    label that is a mask (H, W) over the image (`SegmentationFolder(raw=True)`) goes through the
    transform as its `mask` target and comes out int64 (H, W).

    transform: an albumentations transform or Compose (or None, or any callable image -> image); it is
    copied, then reseeded per item from torch's RNG (see `apply_transform`). It must not normalise or
    convert to a tensor itself. `labels` is the wrapped dataset's `labels` or `targets` (ImageFolder).

    >>> ds = AlbumentationsDataset(nbt.data.image_folder("data/docs"), document_augmentation(size=128))  # doctest: +SKIP
    """

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need one value per channel and std > 0, got {mean!r}, {std!r}")
        if is_albumentations(transform):
            found = sorted(_op_names(transform) & set(_NOT_IN_PIPELINE))
            if found:
                raise ValueError(
                    f"the transform contains {', '.join(found)}: AlbumentationsDataset normalises with "
                    f"mean={tuple(mean)}, std={tuple(std)} and converts to a tensor itself; remove them"
                )
            transform = copy.deepcopy(transform)
        self.dataset, self.transform = dataset, transform
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    @property
    def labels(self) -> np.ndarray:
        labels = labels_of(self.dataset)
        if labels is None:
            raise AttributeError(f"{type(self.dataset).__name__} keeps no .labels, .targets or .y")
        # class labels as int64; real-valued (regression) targets keep their values
        return labels.numpy() if labels.is_floating_point() else np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        image, label = self.dataset[index][:2]
        image = np.asarray(image)
        if is_mask(label, image):  # segmentation: the mask is a target of the same transform
            image, mask = apply_transform(self.transform, image, np.asarray(label))
            return to_tensor(image, self.mean, self.std), torch.from_numpy(np.asarray(mask, dtype=np.int64))
        return to_tensor(apply_transform(self.transform, image), self.mean, self.std), label


def is_mask(label: Any, image: np.ndarray) -> bool:
    """True when `label` is a mask over `image`'s pixels: an array (H, W) for an image (H, W[, C])."""
    return (
        isinstance(label, (np.ndarray, torch.Tensor))
        and label.ndim == 2
        and tuple(label.shape) == image.shape[:2]
    )


def _op_names(transform: Any) -> set[str]:
    names = {type(transform).__name__}
    for child in getattr(transform, "transforms", []):
        names |= _op_names(child)
    return names
