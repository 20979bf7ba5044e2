"""`predict` for a segmentation run (a unet3d / unet2d recipe's, a plain fit's, or a bare model): every
case of a folder predicted whole, one mask per case.

Each case is read as the run read its validation cases (a SegmentationFolder with the run's classes,
normalisation and 2D image size; masks optional) and predicted by `sliding_window_predict`: windows of the
run's training patch, overlapping by half (nnU-Net's step), blended with Gaussian weights (MONAI's
`sliding_window_inference`), in the run's precision on this device. With TTA every window is also
predicted flipped along each combination of the axes the run's augmentation flipped (3D: D/H/W, 8 passes;
2D: the width, 2 passes), each prediction flipped back before the logits are averaged. A 2D image resized
for the model has its logits resized back to the image's own size (bilinear) before the argmax, so the
mask lines up with the image. Cases go one at a time (their shapes differ); only the uint8 mask is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nbtools.config import TrainConfig
from nbtools.data import Augment3D, SegmentationFolder
from nbtools.data.samples import split_sample
from nbtools.data.segread import read_mask
from nbtools.recipes.seg_predictions import SegPredictions
from nbtools.step import Precision
from nbtools.tasks import case_summary, sliding_window_predict, voxel_volume_ml

SEG_RECIPES = ("unet3d", "unet2d")


def seg_flip_axes(ndim: int, batch_transform: Any) -> tuple[int, ...]:
    """Spatial axes TTA flips: 3D, the axes the run's Augment3D flipped (all three when it had none); 2D,
    the width (segmentation_augmentation flips horizontally)."""
    if ndim == 2:
        return (1,)
    aug = batch_transform
    return aug.flip_axes if isinstance(aug, Augment3D) and aug.probs["p_flip"] > 0 else (0, 1, 2)


def seg_folder_inside(data: Any) -> SegmentationFolder | None:
    """The SegmentationFolder `data` is, or wraps (a Subset, a job's val_data), else None."""
    while data is not None and not isinstance(data, SegmentationFolder):
        data = getattr(data, "dataset", None)
    return data


def seg_folder(data: Any, classes: list[str], job_val: Any) -> SegmentationFolder:
    """The cases of `data` read as the run read its validation cases (`job_val`: 2D images at its size),
    images without masks allowed; a mask with an id outside the run's `classes` is refused, named.
    data: a folder or CSV, or a SegmentationFolder (or a dataset wrapping one: a job's val_data), whose
    cases are predicted whole."""
    inner = seg_folder_inside(data)
    if inner is not None:
        if list(inner.classes) != list(classes):
            raise ValueError(f"the cases' classes {inner.classes} are not the run's {classes}")
        view = inner.subset(range(len(inner)), patch=None)
        view.raw = False  # a 2D job's training view gives uint8 for its augmentation; predict wants tensors
        return view
    if not isinstance(data, (str, Path)) or job_val is None:
        raise TypeError(
            "a segmentation model predicts a folder or CSV of cases (images/ with or without labels/; a "
            "recipe run) or an nbt.data.SegmentationFolder(...) of them, got "
            f"{type(data).__name__}; or call nbtools.tasks.sliding_window_predict(model, x, patch) per case"
        )
    x = split_sample(job_val[0])[0]
    size = int(x.shape[-1]) if x.dim() == 3 else None
    return SegmentationFolder(data, patch=None, masks="optional", classes=classes, size=size)


def predict_segmentation(
    model: nn.Module,
    data: Any,
    *,
    job: Any = None,
    meta: dict | None = None,
    task: dict | None = None,
    config: TrainConfig,
    precision_state: dict | None,
    tta: bool,
    device: torch.device,
    weights: str | None,
) -> SegPredictions:
    """Masks of `model` (with the weights to use) on the cases of `data` (see seg_folder and the module
    docstring). job: the recipe run's job rebuilt (its training patch or image size, augmentation and
    class names; meta: the run's, its data's class names). Without a job (a plain fit's run, or a bare
    model): task, what fit recorded (its patch and class names; {} for a module: the SegmentationFolder's
    patch, else each case whole); TTA then flips all three axes of a volume, the width of an image."""
    if job is not None:
        patch = tuple(split_sample(job.train_data[0])[0].shape[1:])  # the run's training patch / image size
        recorded = ((meta or {}).get("data") or {}).get("classes")
        classes = [str(c) for c in (recorded or job.val_data.classes)]
        ds, augmentation = seg_folder(data, classes, job.val_data), job.batch_transform
    else:
        task, inner = task or {}, seg_folder_inside(data)
        classes = [str(c) for c in (task.get("classes") or (inner.classes if inner is not None else []))]
        ds, augmentation = seg_folder(data, classes, None), None
        patch = tuple(task["patch"]) if task.get("patch") else inner.patch
    flips = seg_flip_axes(ds.ndim, augmentation) if tta else ()
    precision = Precision(config.precision, device)
    if precision_state:  # a fallback the run took applies here too
        precision.load_state_dict(precision_state)
    return _predict_cases(model, ds, classes, patch, flips, precision, device, tta=tta, weights=weights)


@torch.no_grad()
def _predict_cases(
    model: nn.Module,
    ds: SegmentationFolder,
    classes: list[str],
    patch: tuple[int, ...] | None,
    flips: tuple[int, ...],
    precision: Precision,
    device: torch.device,
    *,
    tta: bool,
    weights: str | None,
) -> SegPredictions:
    """One mask per case of `ds` (whole cases), by sliding window over `patch` (None: the case whole)."""
    model = model.to(device).eval()
    masks, rows = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        window = patch or tuple(x.shape[1:])
        logits = sliding_window_predict(
            model, x[None].to(device), window, flip_axes=flips, autocast=precision.autocast(), output="logits"
        )
        truth = y.numpy() if isinstance(y, torch.Tensor) else None
        if ds.ndim == 2 and tuple(logits.shape[2:]) != tuple(ds.shapes[i]):  # back to the image's size
            logits = F.interpolate(logits, size=tuple(ds.shapes[i]), mode="bilinear", align_corners=False)
            truth = read_mask(ds.mask_paths[i]) if ds.mask_paths[i] is not None else None
        mask = logits.argmax(1)[0] if logits.shape[1] > 1 else (logits[0, 0] > 0).long()
        mask = mask.to("cpu", torch.uint8).numpy()
        affine = ds.affines[i]
        voxel_ml = voxel_volume_ml(affine) if affine is not None else None
        rows.append(case_summary(mask, classes, voxel_ml, truth))
        masks.append(mask)
    return SegPredictions(
        ds.cases, ds.paths, masks, list(classes), rows, tta=tta, weights=weights, truths=ds.mask_paths
    )
