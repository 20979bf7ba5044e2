"""The segmentation recipes (seed 001's pipeline): a 3D U-Net on volumes and a 2D U-Net on images, each
with deep supervision, Dice + cross-entropy under nnU-Net's output weights, and `val_dice` as the monitor.

`data=None` trains on the embedded synthetic blobs (SyntheticSegVolumes / SyntheticSegImages), so the
notebook and CI run offline; a folder (images/ + labels/, nnU-Net's imagesTr/labelsTr, or an image,mask
CSV) trains on the user's cases, every mask read before the run folder exists (seg_data).

Both recipes monitor `val_dice` (mean over validation cases of the mean Dice of the foreground classes;
ties broken by the val loss), so best.pt, the weights `predict` uses, is the model whose masks overlapped
best. Training items are random patches (a third of them centred on foreground, nnU-Net's oversampling);
validation cases are predicted whole by sliding window, as predict does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbtools.config import TrainConfig
from nbtools.data import (
    AlbumentationsDataset,
    Augment3D,
    SyntheticSegImages,
    SyntheticSegVolumes,
)
from nbtools.data.augment2d import segmentation_augmentation
from nbtools.losses import DeepSupervisionLoss, DiceCELoss
from nbtools.models import unet2d, unet3d
from nbtools.recipes.job import Job
from nbtools.recipes.seg_data import build_seg_data
from nbtools.recipes.user_data import VAL_FRACTION

SEG_MONITOR = "val_dice"  # what best.pt is chosen by (see the module docstring)
DEEP_SUPERVISION_WEIGHTS = "nnunet"  # 1/2^i, the lowest output 0, normalised: .571/.286/.143/0
MULTIPLE = 32  # a U-Net's input sides are multiples of its total downsampling (ResNet stem + 4 stages)


def seg_patch(patch: int | Sequence[int] | None, ndim: int, default: int) -> tuple[int, ...]:
    """A recipe's patch: `ndim` sides, an int for a cube/square (a notebook parameter papermill passes with
    -p), or None for `default` on every side; each a multiple of 32, what the U-Net's input needs."""
    patch = patch or default
    patch = (patch,) * ndim if isinstance(patch, int) else tuple(int(p) for p in patch)
    if len(patch) != ndim or any(p < MULTIPLE or p % MULTIPLE for p in patch):
        raise ValueError(
            f"patch must be {ndim} sides (or one int), each a multiple of {MULTIPLE} (the U-Net halves it 5 "
            f"times), got patch={patch!r}; e.g. patch={(64,) * ndim}"
        )
    return patch


def _config(cfg: dict[str, Any], config: dict[str, Any]) -> TrainConfig:
    cfg.update(monitor=SEG_MONITOR, task="segmentation", checkpoint_every_minutes=10.0, seed=0)
    cfg.update(config)
    return TrainConfig(**cfg)


def unet3d_job(
    smoke: bool = False,
    n_train: int | None = None,
    n_val: int | None = None,
    patch: int | Sequence[int] | None = None,
    depth: int = 10,
    width: float = 0.25,
    deep_supervision: int = 3,
    num_classes: int | None = None,
    in_channels: int | None = None,
    augment: bool = True,
    data: str | Path | None = None,
    val: str | Path | None = None,
    val_fraction: float = VAL_FRACTION,
    **config: Any,
) -> Job:
    """A 3D U-Net (ResNet-10 encoder at width 0.25, 3 deep-supervision heads) on SyntheticSegVolumes:
    32 train and 8 val cases of 32^3 with two blob classes, 10 epochs, a few minutes on a 2-core CPU
    (smoke: 8 and 4 cases, 2 epochs; explicit arguments win).

    data: your cases instead (SegmentationFolder: images/ + labels/ or masks/, nnU-Net's imagesTr/labelsTr
    with dataset.json, or an image,mask CSV; .nii.gz/.nii/.npy, z-scored per case); training items are
    random `patch`es (D, H, W) or an int for a cube (default 64; multiples of 32; smaller cases are padded),
    a third centred on foreground; val: a second folder, or None for a `val_fraction` hold-out of the cases
    (seed: the config's). num_classes / in_channels: the model's, for the embedded demo (predict rebuilds a
    data run's model that way, without its data). Training batches are augmented on the device by
    Augment3D, the masks moved with the volumes (nearest), when `augment`. Keyword arguments override
    TrainConfig fields, e.g. unet3d_job(epochs=40, precision="bf16").
    """
    seed = config.get("seed", 0)
    if data is None:
        patch = seg_patch(patch, 3, 32)
        n_train, n_val = n_train or (8 if smoke else 32), n_val or (4 if smoke else 8)
        classes = num_classes or 3
        train = SyntheticSegVolumes(n_train, shape=patch, num_classes=classes, seed=1)
        valset = SyntheticSegVolumes(n_val, shape=patch, num_classes=classes, seed=2)
        channels, record, folders = in_channels or 1, None, ()
    else:
        patch = seg_patch(patch, 3, 64)
        user = build_seg_data(data, val, val_fraction, seed, patch)
        train, valset, record, folders = user.train, user.val, user.record, user.folders
        classes, channels = len(record["classes"]), record["channels"]
    cfg = dict(epochs=2 if smoke else 10, batch_size=4, lr=2e-3, warmup_epochs=1, clip_norm=1.0)
    if data is not None:
        cfg["eval_batch_size"] = 1  # whole cases differ in shape
    model = unet3d(depth, channels, classes, width=width, deep_supervision=deep_supervision, verbose=False)
    return Job(
        model=model,
        train_data=train,
        val_data=valset,
        loss_fn=DeepSupervisionLoss(DiceCELoss(), weights=DEEP_SUPERVISION_WEIGHTS),
        config=_config(cfg, config),
        batch_transform=Augment3D() if augment else None,
        data_record=record,
        folders=folders,
    )


def unet2d_job(
    smoke: bool = False,
    n_train: int | None = None,
    n_val: int | None = None,
    size: int | None = None,
    backbone: str = "resnet18",
    weights: str | None = None,
    width: float = 0.5,
    deep_supervision: int = 3,
    num_classes: int | None = None,
    data: str | Path | None = None,
    val: str | Path | None = None,
    val_fraction: float = VAL_FRACTION,
    **config: Any,
) -> Job:
    """A 2D U-Net on a torchvision ResNet-18 (decoder width 0.5, 3 deep-supervision heads) on
    SyntheticSegImages: 64 train and 16 val images of 64 px, one blob class, 8 epochs (smoke: 8 and 4
    images at 32 px, 2 epochs; explicit arguments win).

    data: your images instead (SegmentationFolder: images/ + labels/ or masks/ of PNG/JPEG images with PNG
    masks, grey values or palette indices as class ids, or an image,mask CSV), resized to size x size
    (default 256; a multiple of 32; masks by nearest neighbour); val, val_fraction: as unet3d_job.
    weights: None, "imagenet" or a .pth for the encoder. Training images are augmented by
    `segmentation_augmentation()` (flips, affine, brightness, gamma) on uint8 with their masks, before
    ImageNet normalisation.
    """
    seed = config.get("seed", 0)
    if data is None:
        size = seg_patch(size, 2, 32 if smoke else 64)[0]
        n_train, n_val = n_train or (8 if smoke else 64), n_val or (4 if smoke else 16)
        classes = num_classes or 2
        raw = SyntheticSegImages(n_train, size=size, num_classes=classes, seed=1, raw=True)
        valset = SyntheticSegImages(n_val, size=size, num_classes=classes, seed=2)
        record, folders = None, ()
    else:
        size = seg_patch(size, 2, 256)[0]
        user = build_seg_data(data, val, val_fraction, seed, None, size=size, raw=True)
        if user.record["channels"] != 3:
            raise ValueError(
                f"unet2d takes RGB images (3 channels, ImageNet-normalised); {data} has "
                f"{user.record['channels']} channels per case"
            )
        raw, record, folders = user.train, user.record, user.folders
        valset = AlbumentationsDataset(user.val, None)  # normalised as the training images, no random op
        classes = len(record["classes"])
    cfg = dict(epochs=2 if smoke else 8, batch_size=8, lr=1e-3, warmup_epochs=1, clip_norm=1.0)
    model = unet2d(
        backbone, classes, weights=weights, deep_supervision=deep_supervision, width=width, verbose=False
    )
    return Job(
        model=model,
        train_data=AlbumentationsDataset(raw, segmentation_augmentation(train=True)),
        val_data=valset,
        loss_fn=DeepSupervisionLoss(DiceCELoss(), weights=DEEP_SUPERVISION_WEIGHTS),
        config=_config(cfg, config),
        data_record=record,
        folders=folders,
    )
