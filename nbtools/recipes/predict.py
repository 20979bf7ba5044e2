"""`predict`: apply a trained run (or a model) to new files: probabilities, predicted classes, a CSV.

A run folder trained from a recipe rebuilds its model from the recorded recipe arguments (without the
training data: the recipe's embedded set is built with two samples) and loads best.pt, best_ema.pt or
last.pt. Folder or CSV data is read as the run's inputs were: a VolumeFolder at the run's volume shape
or an ImageFolder at its image size, unlabelled files allowed. Inference runs through the same
`train.evaluate.predict` as `fit`'s validation, in the run's precision on this device, so predicting
the validation set reproduces the recorded validation metrics.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nbtools.config import TrainConfig
from nbtools.data import ImageFolder, VolumeFolder
from nbtools.data.checked import CheckedSamples, collate_checked
from nbtools.data.samples import is_unlabelled, sample_paths, split_sample
from nbtools.recipes.head_predictions import predict_heads
from nbtools.recipes.jobs import Job, make_job
from nbtools.recipes.prediction_classes import output_class_names, probabilities, recorded_classes
from nbtools.recipes.predictions import Predictions
from nbtools.recipes.regression_predictions import (
    is_regression,
    recorded_task,
    regression_predictions,
    run_scaler,
    with_targets,
)
from nbtools.recipes.resume import INIT_ONLY
from nbtools.recipes.seg_predict import SEG_RECIPES, predict_segmentation, seg_folder_inside
from nbtools.recipes.seg_predictions import SegPredictions
from nbtools.recipes.sizes import volume_shape
from nbtools.recipes.tta import FlipAverage, flip_dims
from nbtools.runs import Run, list_checkpoints, load_checkpoint
from nbtools.runs.files import BEST_EMA_FILE, BEST_FILE, LAST_FILE
from nbtools.step import Precision
from nbtools.train.evaluate import predict as predict_logits
from nbtools.train.loader import EvalBatches, loader_kwargs

log = logging.getLogger(__name__)

WEIGHTS = {"best": BEST_FILE, "best_ema": BEST_EMA_FILE, "last": LAST_FILE}
# recipe arguments that say where the training data is; predict never reads it
DATA_ARGS = {"data", "val", "csv", "val_csv", "positive", "val_fraction", "split_seed", "cache_dir"}
# VolumeFolder options a run may record, passed on to the prediction folder
VOLUME_OPTIONS = ("normalize", "mask_threshold", "resize", "npz_key")


@dataclass
class _Source:
    """What predict needs from its first argument."""

    model: nn.Module
    where: str  # for messages
    config: TrainConfig | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    precision: dict | None = None  # the newest checkpoint's precision state
    job: Job | None = None  # the rebuilt recipe job (recipe runs)
    run_dir: Path | None = None  # where the weights came from (None for a module passed in)


def predict(
    run_or_dir_or_model: str | Path | Run | nn.Module,
    data: str | Path | Dataset,
    *,
    weights: str = "best",
    tta: bool = False,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    threshold: float | None = None,
) -> Predictions | SegPredictions:
    """Class probabilities of a trained run (or a model) on `data`, one row per sample; for a
    segmentation run (unet3d, unet2d), one mask per case (`SegPredictions`, see below).

    run_or_dir_or_model: a run folder trained from a recipe (the model is rebuilt from it), the `Run`
    that `fit` returned (a recipe run is rebuilt from its folder; a plain fit's model is copied and the
    run's weights loaded into the copy), or an nn.Module, used with the weights it has (and moved to
    `device`). data: a folder (class sub-folders, or unlabelled files directly in it), a CSV (`path`
    and, if known, `label` columns), a Dataset or a DataLoader's dataset; a folder or CSV needs a
    recipe run, which says how its inputs were read. weights: "best", "best_ema" or "last" (the newer
    of last.pt and the newest checkpoint); ignored for a module. tta: average the probabilities over
    flips: every combination of the axes Augment3D flipped in training (8 passes for the 3D recipe),
    the width for 2D images (2 passes). batch_size: default the run's eval batch size. Class names:
    the run's (meta "classes"), else the data's, else "0", "1", ... Binary tasks predict class 1 at
    `threshold` (default: the run's TrainConfig.threshold). A bad file raises SampleError naming it.

    A segmentation run predicts a folder of cases (images/ with or without labels/, nnU-Net's layout, or
    an image[,mask] CSV) whole, by sliding window over the run's patch with Gaussian weighting and, with
    tta, flips undone before averaging (nbtools.recipes.seg_predict); `masks.save(out_dir)` writes one
    mask per case (NIfTI with the image's affine and header, or PNG) and a table of voxels, ml and Dice.
    A segmentation model not from a recipe (the Run of a plain fit, or a module) predicts the cases of a
    SegmentationFolder the same way: windows of the run's recorded patch (a module: the folder's patch,
    else each case whole). A module whose output is a map per sample on any other dataset is refused: its
    task cannot be told, and class probabilities of a map would be nonsense.

    >>> preds = nbt.predict("runs/mine", "drive/MyDrive/new_volumes", tta=True)   # doctest: +SKIP
    >>> preds.to_csv("predictions.csv")                                          # doctest: +SKIP
    >>> nbt.predict("runs/seg", "new_scans", tta=True).save("masks/")            # doctest: +SKIP
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(map(repr, WEIGHTS))}, got {weights!r}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    source = _source(run_or_dir_or_model, weights)
    cfg = source.config or TrainConfig()
    if source.meta.get("recipe") in SEG_RECIPES:
        return predict_segmentation(
            source.model, data, job=source.job, meta=source.meta, config=cfg, precision_state=source.precision,
            tta=tta, device=device, weights=weights,
        )  # fmt: skip
    regression = is_regression(source.meta, cfg)  # predicted values in the user's units, not classes
    task = recorded_task(source.run_dir) if source.run_dir is not None else {}
    used = weights if source.config is not None else None
    if task.get("name") == "multitask":  # named heads
        return predict_heads(
            source.model.to(device), data, task, cfg, source.precision, device, batch_size, used
        )
    if task.get("name") == "segmentation" or (not task and seg_folder_inside(data) is not None):  # own model
        return predict_segmentation(
            source.model, data, task=task, config=cfg, precision_state=source.precision, tta=tta, device=device,
            weights=used,
        )  # fmt: skip
    ds = _dataset(data, source)
    if regression and isinstance(data, (str, Path)):
        ds = with_targets(data, ds, (source.meta.get("data") or {}).get("classes") or ["target"])
    if len(ds) == 0:
        raise ValueError(f"{data!r} holds no samples to predict on")
    precision = Precision(cfg.precision, device)
    if source.precision:  # a fallback the run took applies here too (see step.precision.resume_precision)
        precision.load_state_dict(source.precision)
    pairs = CheckedSamples(_Pairs(ds), need_labels=False)
    size = batch_size or cfg.eval_batch_size or cfg.batch_size
    loader = DataLoader(
        pairs,
        batch_sampler=EvalBatches(len(ds), size),
        collate_fn=collate_checked,
        **loader_kwargs(cfg.num_workers, device.type),
    )
    model = source.model.to(device)
    if tta:
        aug = source.job.batch_transform if source.job is not None else None
        model = FlipAverage(model, flip_dims(split_sample(ds[0])[0].dim(), aug), values=regression)
    logits, targets, _ = predict_logits(model, loader, precision)
    if regression:
        scaler = run_scaler(task) if source.run_dir is not None else None
        return regression_predictions(logits, targets, ds, source.meta, scaler, tta, used)
    if logits.dim() > 2:  # a map or a matrix per sample: class probabilities of it would be nonsense
        raise ValueError(
            f"{source.where} outputs {tuple(logits.shape[1:])} per sample, not one score per class; predict "
            "cannot tell its task from a bare model: for segmentation pass the cases as "
            "nbt.data.SegmentationFolder(...), for regression or named heads pass the Run fit returned "
            "(it records the task)"
        )
    logits = logits.numpy().reshape(len(logits), -1)
    probs = probabilities(logits)
    if threshold is not None and probs.shape[1] != 2:
        raise ValueError(
            f"threshold={threshold} cuts the positive class's probability of a two-class model; this one has "
            f"{probs.shape[1]} classes and predicts the most probable: drop threshold"
        )
    labels = targets.numpy().astype(np.int64)
    classes, agree = output_class_names(source.meta, ds, probs.shape[1])
    scalar = labels.ndim == 1  # one whole-number label per sample, not a mask or a soft target
    known = agree and scalar and not is_unlabelled(ds) and labels.min() >= 0 and labels.max() < len(classes)
    paths = sample_paths(ds)
    return Predictions(
        probs=probs,
        logits=logits,
        classes=classes,
        threshold=(cfg.threshold if threshold is None else threshold) if probs.shape[1] == 2 else None,
        labels=labels if known else None,
        paths=[str(p) for p in paths] if paths is not None else None,
        tta=tta,
        weights=used,
    )


class _Pairs(Dataset):
    """Samples as (input, label): a bare input gets the label -1; `.dataset` keeps paths visible."""

    def __init__(self, ds: Dataset) -> None:
        self.dataset = ds

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y, has = split_sample(self.dataset[i])
        return x, (y if has and y is not None else -1)


def _source(obj: Any, weights: str) -> _Source:
    if isinstance(obj, nn.Module):
        return _Source(obj, f"the {type(obj).__name__} passed in")
    if isinstance(obj, Run):
        if obj.model is not None and "recipe" not in obj.meta:  # a plain fit's run, in this session
            model = copy.deepcopy(obj.model).cpu()
            model.load_state_dict(_weights(obj.run_dir, weights))
            meta, cfg, prec = _run_record(obj.run_dir)
            return _Source(
                model, str(obj.run_dir), cfg or obj.config, meta or obj.meta, prec, run_dir=obj.run_dir
            )
        obj = obj.run_dir
    if not isinstance(obj, (str, Path)):
        raise TypeError(f"predict takes a run folder, a Run or an nn.Module, got {type(obj).__name__}")
    run_dir = Path(obj)
    meta, cfg, prec = _run_record(run_dir)
    if "recipe" not in meta:
        raise ValueError(
            f"{run_dir} was not trained from a recipe, so predict cannot rebuild its model; build the model as "
            f"you trained it, load the weights (model.load_state_dict(torch.load('{run_dir / WEIGHTS[weights]}', "
            f"weights_only=True))) and call nbt.predict(model, dataset), or pass the Run that fit returned"
        )
    args = {k: v for k, v in meta["args"].items() if k not in INIT_ONLY | DATA_ARGS}
    args.update(n_train=2, n_val=2)  # the model does not depend on the data: keep the embedded set tiny
    classes = recorded_classes(meta)
    # one output per class (a regression run: per target column) of the run's data
    if classes and (meta["recipe"] in ("resnet3d", *SEG_RECIPES) or args.get("task") == "regression"):
        args["num_classes"] = len(classes)
    if meta["recipe"] == "unet3d" and (meta.get("data") or {}).get("channels"):
        args["in_channels"] = meta["data"]["channels"]
    job = make_job(meta["recipe"], **args)
    model = job.model
    try:
        model.load_state_dict(_weights(run_dir, weights))
    except RuntimeError as e:  # missing / unexpected keys or shapes: the recipe changed since the run
        raise ValueError(
            f"the {WEIGHTS[weights]} weights of {run_dir} do not fit the {meta['recipe']!r} recipe's model built "
            f"from the run's arguments {meta['args']}: {e}"
        ) from e
    return _Source(model, str(run_dir), cfg, meta, prec, job, run_dir)


def _run_record(run_dir: Path) -> tuple[dict, TrainConfig | None, dict | None]:
    """meta, config and precision state: from the newest valid checkpoint, else metrics.json."""
    valid = list_checkpoints(run_dir).valid()
    if valid:
        state = load_checkpoint(valid[-1].path, mmap=True)
        return state["run"].get("meta", {}), TrainConfig.from_dict(state["config"]), state.get("precision")
    run = Run.load(run_dir)
    return run.meta, run.config, None


def _weights(run_dir: Path, weights: str) -> dict:
    path = Path(run_dir) / WEIGHTS[weights]
    if weights == "last":  # last.pt is written when fit returns; a killed run's newest checkpoint is newer
        valid = list_checkpoints(run_dir).valid()
        newest = valid[-1].path if valid else None
        if newest is not None and (not path.is_file() or newest.stat().st_mtime > path.stat().st_mtime):
            return load_checkpoint(newest)["model"]
    if not path.is_file():
        have = [w for w, f in WEIGHTS.items() if (Path(run_dir) / f).is_file()]
        why = " (the run had no EMA: ema_decay=None)" if weights == "best_ema" else ""
        raise FileNotFoundError(
            f"{path} does not exist{why}; this run has weights={have or 'none yet'}: pass one of them"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def _dataset(data: Any, source: _Source) -> Dataset:
    if isinstance(data, DataLoader):
        return data.dataset
    if not isinstance(data, (str, Path)):
        if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise TypeError(f"data must be a folder, a CSV or a Dataset, got {type(data).__name__}")
        return data
    if source.job is None:
        raise ValueError(
            f"data={str(data)!r} is a path, but {source.where} does not say how to read files (shape, size, "
            f"normalisation); pass a Dataset instead, e.g. nbt.data.VolumeFolder({str(data)!r}, shape=..., "
            f"labels='auto') or nbt.data.ImageFolder({str(data)!r}, size=..., labels='auto')"
        )
    args, classes = source.meta.get("args", {}), recorded_classes(source.meta)
    x = split_sample(source.job.val_data[0])[0]  # an input as the run saw it: (1, D, H, W) or (3, S, S)
    if x.dim() == 4:
        shape = volume_shape(args["shape"], 0) if args.get("shape") else tuple(x.shape[1:])
        options = {k: args[k] for k in VOLUME_OPTIONS if k in args}
        return VolumeFolder(data, shape=shape, labels="auto", classes=classes, **options)
    size = int(args["size"]) if args.get("size") else int(x.shape[-1])
    return ImageFolder(data, size=size, labels="auto", classes=classes)
