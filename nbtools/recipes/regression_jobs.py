"""The regression side of the recipes (`task="regression"`): their data, one output per target column,
torch's MSE / Huber / L1 loss, and what best.pt is chosen by.

The recipes monitor `val_r2` (REGRESSION_MONITOR, the mean R^2 over target columns), ties broken by the
val loss. R^2 rather than val_mae or val_rmse: it has no unit, so with several target columns (an age in
years beside a volume in ml) each column counts the same, where a mean MAE is the largest unit's; and it
says how far from chance a model is (0: the training mean, 1: exact) at any scale, which is what the loss
on standardised targets pursues. Its weak point, a validation set whose target is constant (R^2
undefined), is said by the metric itself (val_r2_undefined; nbtools.tasks.regression).

Training batches of the 3D recipe are augmented by Augment3D without zoom and translation: a target such
as a lesion volume in voxels, or the demo set's blob size, changes when the image is zoomed, and a shifted
volume can push a blob out of the field of view; flips, small rotations and intensity changes keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from nbtools.config import TrainConfig
from nbtools.data import AlbumentationsDataset, Augment3D, document_augmentation
from nbtools.data.regression_folder import RegressionFolder
from nbtools.data.synthetic_regression import SyntheticRegressionVolumes
from nbtools.models import resnet2d_attention, resnet3d
from nbtools.recipes.job import Job
from nbtools.recipes.regression_data import build_regression_data

TASKS = ("classification", "regression")
REGRESSION_MONITOR = "val_r2"
LOSSES = {"mse": nn.MSELoss, "huber": nn.HuberLoss, "l1": nn.L1Loss}


def check_task(task: str, loss: str, positive: str | None, targets) -> None:
    """Refuse an unknown task or regression loss, naming the allowed values, and an argument of the other
    task (a positive class for regression, target columns for classification), which would do nothing."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if loss not in LOSSES:
        raise ValueError(f"regression_loss must be one of {tuple(LOSSES)} (torch's losses), got {loss!r}")
    if task == "regression" and positive is not None:
        raise ValueError(f"positive={positive!r} names a class; task='regression' has none: drop positive=")
    if task == "classification" and targets is not None:
        raise ValueError(
            f"targets={targets!r} picks the target columns of a regression CSV: add task='regression', or drop it"
        )


def regression_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config fields a regression recipe sets over the classification ones (explicit arguments win):
    the task, its monitor, no decision threshold."""
    return {"task": "regression", "monitor": REGRESSION_MONITOR, **config}


@dataclass
class RegressionParts:
    """A regression recipe's data and loss: `outputs` is the model's number of outputs (target columns)."""

    train: Dataset
    val: Dataset
    outputs: int
    loss_fn: nn.Module
    record: dict[str, Any] | None = None  # meta["data"] for the user's CSV, None for the demo set
    folders: tuple[Dataset, ...] = ()
    batch_transform: Any = None


def regression_volumes(
    data: str | Path | None,
    val: str | Path | None,
    targets: list[str] | None,
    shape: tuple[int, int, int],
    n_train: int,
    n_val: int,
    val_fraction: float,
    cache_dir: str | Path | None,
    num_outputs: int | None,
    loss: str,
    augment: bool,
    seed: int = 0,
) -> RegressionParts:
    """Volumes and targets for resnet3d: the user's CSV (RegressionFolder of volumes at `shape`), or the
    embedded SyntheticRegressionVolumes (train seed 1, val seed 2; the target is the blobs' size)."""
    aug = Augment3D(p_zoom=0.0, p_translate=0.0) if augment else None
    if data is None:
        train = SyntheticRegressionVolumes(n=n_train, shape=shape, seed=1)
        valset = SyntheticRegressionVolumes(n=n_val, shape=shape, seed=2)
        return RegressionParts(train, valset, num_outputs or 1, LOSSES[loss](), batch_transform=aug)

    def open_csv(path, names):
        return RegressionFolder.volumes(path, shape, names, cache_dir=cache_dir)

    user = build_regression_data(open_csv, data, val, targets, val_fraction, seed)
    outputs = len(user.classes)
    return RegressionParts(user.train, user.val, outputs, LOSSES[loss](), user.record, user.folders, aug)


def regression_images(
    data: str | Path | None,
    val: str | Path | None,
    targets: list[str] | None,
    size: int,
    n_train: int,
    n_val: int,
    val_fraction: float,
    num_outputs: int | None,
    loss: str,
    seed: int = 0,
) -> RegressionParts:
    """Images and targets for focal2d's backbone: the user's CSV (RegressionFolder of images at size x size,
    training images through document_augmentation), or the embedded set in 2D (3 channels, no augmentation)."""
    if data is None:
        train = SyntheticRegressionVolumes(n=n_train, shape=(size, size), seed=1, channels=3)
        valset = SyntheticRegressionVolumes(n=n_val, shape=(size, size), seed=2, channels=3)
        return RegressionParts(train, valset, num_outputs or 1, LOSSES[loss]())

    def open_csv(path, names):
        return RegressionFolder.images(path, size, names, raw=True)

    user = build_regression_data(open_csv, data, val, targets, val_fraction, seed)
    train = AlbumentationsDataset(user.train, document_augmentation(train=True))
    valset = AlbumentationsDataset(user.val, None)  # normalised as the training images, no random op
    return RegressionParts(train, valset, len(user.classes), LOSSES[loss](), user.record, user.folders)


def focal2d_regression(cfg: dict[str, Any], config: dict[str, Any], args: tuple, **model: Any) -> Job:
    """focal2d_job(task="regression"): its backbone, attention and group LRs (`cfg`, without the threshold),
    one output per target column, no prior; `args` are regression_images' up to the seed (config's)."""
    cfg = {**cfg, **regression_config(config)}
    parts = regression_images(*args, seed=cfg["seed"])
    return Job(
        model=resnet2d_attention(num_classes=parts.outputs, **model),
        train_data=parts.train,
        val_data=parts.val,
        loss_fn=parts.loss_fn,
        config=TrainConfig(**cfg),
        data_record=parts.record,
        folders=parts.folders,
    )


def resnet3d_regression(
    cfg: dict[str, Any], config: dict[str, Any], args: tuple, outputs, loss: str, augment: bool, depth, width
) -> Job:
    """resnet3d_job(task="regression"): its ResNet and config (`cfg`) with one output per target column;
    `args` are regression_volumes' data arguments up to the cache folder."""
    cfg = {**cfg, **regression_config(config)}
    parts = regression_volumes(*args, outputs, loss, augment, seed=cfg["seed"])
    return Job(
        model=resnet3d(depth=depth, in_channels=1, num_classes=parts.outputs, dropout=0.1, width=width),
        train_data=parts.train,
        val_data=parts.val,
        loss_fn=parts.loss_fn,
        config=TrainConfig(**cfg),
        batch_transform=parts.batch_transform,
        data_record=parts.record,
        folders=parts.folders,
    )
