"""Segmentation through fit: NIfTI files written with nibabel, a SegmentationFolder, a small 3D U-Net with
deep supervision and Dice + CE. val_dice agrees with MONAI's DiceMetric on the same predictions (whole
validation volumes, larger than the training patches, by sliding window), monitor="val_dice" picks the
best epoch, and a resume is bit-identical."""

import nibabel as nib
import numpy as np
import pytest
import torch

import nbtools as nbt
from nbtools.losses import DeepSupervisionLoss
from nbtools.losses.dice_ce import DiceCELoss
from nbtools.runs import load_checkpoint
from nbtools.tasks import sliding_window_predict
from tests.helpers import StopAfter, assert_same, without_times

PATCH = (32, 32, 32)
CFG = nbt.TrainConfig(
    epochs=2, batch_size=2, lr=3e-3, monitor="val_dice", log_every=2, checkpoint_every_minutes=None,
    keep_last=5, seed=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def seg_root(tmp_path_factory):
    """6 cases of 32 x 32 x 48 voxels: a bright box of class 1 and a brighter one of class 2."""
    root = tmp_path_factory.mktemp("seg")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        mask = np.zeros((32, 32, 48), np.int16)
        a, b = rng.integers(2, 12, 3), rng.integers(16, 26, 3)
        mask[a[0] : a[0] + 8, a[1] : a[1] + 8, a[2] : a[2] + 10] = 1
        mask[b[0] : b[0] + 6, b[1] : b[1] + 6, b[2] : b[2] + 12] = 2
        image = (mask * 2.0 + rng.normal(0, 1, mask.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / "images" / f"case{i}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(root / "labels" / f"case{i}.nii.gz"))
    return root


def _data(root):
    ds = nbt.data.SegmentationFolder(root, patch=PATCH, classes=["background", "left box", "right box"])
    return ds.split(fraction=1 / 3, seed=0)  # val: whole cases, larger than the patch


def _model():
    torch.manual_seed(0)
    return nbt.models.unet3d(depth=10, num_classes=3, width=0.125, deep_supervision=2, verbose=False)


def _fit(root, run_dir, cfg=CFG, model=None, **kw):
    train, val = _data(root)
    loss = DeepSupervisionLoss(DiceCELoss(), "nnunet")
    return nbt.fit(model or _model(), train, val, loss, cfg, run_dir, verbose=False, **kw)


def _monai_dice(model, val) -> float:
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=True)
    model.eval()
    for i in range(len(val)):
        x, mask = val[i]
        pred = sliding_window_predict(model, x[None], PATCH, output="mask")
        one_hot = lambda m: torch.nn.functional.one_hot(m.long(), 3).movedim(-1, 1)  # noqa: E731
        metric(one_hot(pred), one_hot(mask[None]))
    return float(metric.aggregate())


def test_seg_fit_records_dice_per_class_agreeing_with_monai(seg_root, tmp_path):
    run = _fit(seg_root, tmp_path / "run")
    last = run.history[-1]
    assert run.task["name"] == "segmentation" and run.task["classes"][1] == "left box"
    assert {"val_dice", "val_dice_left_box", "val_dice_right_box", "val_dice_left_out", "val_loss"} <= set(
        last
    )
    assert last["val_dice"] == pytest.approx(_monai_dice(run.model, _data(seg_root)[1]), abs=1e-6)
    best = [r["val_dice"] for r in run.history]
    assert run.best_epoch == 1 + int(np.argmax(best))  # monitor val_dice, mode max
    kept = torch.load(tmp_path / "run" / "best_val.pt", weights_only=True)
    assert "logits" not in kept and kept["dice_per_case"].shape == (2, 2)  # Dice per case, no logits
    terms = run.steps[-1]["loss_terms"]  # deep supervision: each output's loss, Dice and CE parts
    assert {"main", "aux1", "main.dice", "main.ce"} <= set(terms)


def test_seg_resume_is_bit_identical(seg_root, tmp_path):
    straight = _fit(seg_root, tmp_path / "a")
    with pytest.raises(StopAfter.Disconnect):  # dies in epoch 2, on its second batch
        _fit(seg_root, tmp_path / "b", batch_transform=StopAfter(3))
    resumed = _fit(seg_root, tmp_path / "b", resume="latest")
    a, b = load_checkpoint(tmp_path / "a" / "epoch_002.pt"), load_checkpoint(tmp_path / "b" / "epoch_002.pt")
    for key in ("model", "optimizer", "rng"):
        assert_same(a[key], b[key], key)
    assert without_times(straight.history) == without_times(resumed.history)
    assert resumed.task == straight.task


def test_a_pair_that_fits_no_task_is_refused_naming_both_shapes(seg_root, tmp_path):
    train, val = _data(seg_root)

    class Flat(torch.nn.Module):  # (B, 3, 32, 32, 32) logits, but 2D masks: no task fits
        def forward(self, x):
            return x.repeat(1, 3, 1, 1, 1)

    class Squashed(torch.utils.data.Dataset):
        def __init__(self, ds):
            self.ds = ds

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            x, m = self.ds[i]
            return x, m[0]

    with pytest.raises(ValueError, match=r"\(1, 3, 32, 32, 32\).*\(1, 32, 32\)"):
        nbt.fit(Flat(), Squashed(train), Squashed(val), DiceCELoss(), CFG, tmp_path / "r", verbose=False)
    assert not list((tmp_path / "r").iterdir())  # refused before anything was written


def test_predict_gives_masks_for_a_plain_fits_run_and_a_bare_model(seg_root, tmp_path):
    run = _fit(seg_root, tmp_path / "run")
    val = _data(seg_root)[1]
    masks = nbt.predict(
        run, val
    )  # the Run a plain fit returned: its best weights, recorded patch and classes
    assert isinstance(masks, nbt.recipes.SegPredictions) and masks.classes[1] == "left box"
    best = run.history[run.best_epoch - 1]["val_dice"]
    assert masks.dice()["dice"] == pytest.approx(best, abs=1e-6)  # predicting the val set reproduces it
    assert masks.save(tmp_path / "masks").is_file() and len(list((tmp_path / "masks").glob("*.nii.gz"))) == 2

    model = _model().eval()  # a bare model: windows of the folder's patch over each whole case
    bare = nbt.predict(model, val.subset(range(len(val)), patch=PATCH), device="cpu")
    for i, mask in enumerate(bare.masks):
        want = sliding_window_predict(model, val[i][0][None], PATCH, output="mask")[0]
        assert np.array_equal(mask, want.numpy().astype(np.uint8))

    crops = [(x[..., :32], m[..., :32]) for x, m in (val[i] for i in range(2))]
    pairs = torch.utils.data.TensorDataset(*(torch.stack(t) for t in zip(*crops)))
    with pytest.raises(ValueError, match=r"outputs \(3, 32, 32, 32\) per sample.*SegmentationFolder"):
        nbt.predict(model, pairs, device="cpu")  # a bare model on plain tensors: no nonsense class table
    with pytest.raises(TypeError, match="SegmentationFolder"):
        nbt.predict(run, pairs)
