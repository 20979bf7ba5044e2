"""The segmentation recipes on real files (nibabel NIfTI, PIL PNG): what a job records of the user's cases,
a resume refusing a changed mask, bad folders named before any run folder exists, and predict writing one
mask per case (the image's affine and header; PNG at the image's own size) with a per-case table whose
Dice agrees with MONAI's DiceMetric."""

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

import nbtools as nbt
from nbtools.data import SegmentationDataError, SyntheticSegImages, SyntheticSegVolumes
from nbtools.data import write_segmentation_folder as write_folder
from nbtools.data.segwrite import AFFINE
from nbtools.losses import DeepSupervisionLoss, DiceCELoss
from nbtools.recipes import DataChangedError, SegPredictions
from nbtools.runs import Run
from nbtools.tasks import voxel_volume_ml


@pytest.fixture(scope="module")
def vols():
    return SyntheticSegVolumes(5, shape=(32, 32, 32), num_classes=3, seed=3)


def _job(recipe, **args):
    args.setdefault("width", 0.125)  # the lightest U-Net: CPU tests
    return nbt.recipes.make_job(recipe, smoke=True, **args)


def _hand_made_run(job, run_dir: Path) -> Path:
    """A run folder as fit leaves it for predict: metrics.json with the recipe's meta, and best.pt."""
    run_dir.mkdir(parents=True)
    Run(run_dir, job.config, meta=job.meta).save()
    torch.save(job.model.state_dict(), run_dir / "best.pt")
    return run_dir


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _monai_dice(pred: np.ndarray, truth: np.ndarray, n: int) -> np.ndarray:
    from monai.metrics import DiceMetric

    def onehot(a):
        ids = torch.as_tensor(np.array(a), dtype=torch.long)  # a copy: nibabel's arrays are read-only
        return torch.nn.functional.one_hot(ids, n).movedim(-1, 0)[None]

    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    return metric(onehot(pred), onehot(truth))[0].numpy()


def test_unet3d_job_on_a_nifti_folder_records_its_cases_and_trains_on_patches(tmp_path, vols):
    root = write_folder(vols, tmp_path / "seg")
    job = _job("unet3d", data=root, patch=32)
    data = job.meta["data"]
    assert data["kind"] == "segmentation" and data["classes"] == ["background", "class_1", "class_2"]
    assert data["split"]["n_train"] == 4 and data["split"]["n_val"] == 1 and data["channels"] == 1
    assert data["fingerprint"]["train"]["n_files"] == 10  # every image and every mask
    assert any(":mask:" in f[2] for f in data["fingerprint"]["train"]["files"])  # masks by their ids
    x, y = job.train_data[0]
    assert x.shape == (1, 32, 32, 32) and y.shape == (32, 32, 32) and y.dtype == torch.int64
    assert job.val_data.patch is None  # whole cases, by sliding window
    assert isinstance(job.loss_fn, DeepSupervisionLoss) and isinstance(job.loss_fn.base, DiceCELoss)
    assert job.loss_fn.preset == "nnunet" and job.model.num_classes == 3
    assert job.config.monitor == "val_dice"


def test_a_patch_the_unet_cannot_take_is_refused_naming_it(tmp_path, vols):
    with pytest.raises(ValueError, match=r"patch must be 3 sides.*multiple of 32.*patch=\(20, 20, 20\)"):
        _job("unet3d", data=write_folder(vols, tmp_path / "seg"), patch=20)


def test_load_job_refuses_a_mask_edited_at_the_same_size(tmp_path, vols):
    root = write_folder(vols, tmp_path / "seg")
    run_dir = _hand_made_run(_job("unet3d", data=root, patch=32), tmp_path / "run")
    assert nbt.recipes.load_job(run_dir).meta["data"]["split"]["n_train"] == 4  # the same cases
    mask_path = root / "labels" / "case_002.nii.gz"
    mask = np.asarray(nib.load(mask_path).dataobj)
    mask[mask == 1] = 2  # a relabelled structure: uncompressed the same number of bytes
    nib.save(nib.Nifti1Image(mask, AFFINE), mask_path)
    with pytest.raises(DataChangedError, match=r"labels/case_002\.nii\.gz"):
        nbt.recipes.load_job(run_dir)


def _missing_mask(root):
    (root / "labels" / "case_001.nii.gz").unlink()


def _orphan_mask(root):
    (root / "images" / "case_003.nii.gz").unlink()


def _shape(root):
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 31), np.uint8), AFFINE), root / "labels" / "case_000.nii.gz")


def _affine(root):
    mask = np.asarray(nib.load(root / "labels" / "case_002.nii.gz").dataobj)
    nib.save(nib.Nifti1Image(mask, np.diag([1.0, 1.0, 1.0, 1.0])), root / "labels" / "case_002.nii.gz")


def _outside(root):
    mask = np.asarray(nib.load(root / "labels" / "case_004.nii.gz").dataobj).copy()
    mask[0, 0, 0] = 7  # far above the others: not one of the classes the other masks use
    nib.save(nib.Nifti1Image(mask, AFFINE), root / "labels" / "case_004.nii.gz")


def _float(root):
    mask = np.asarray(nib.load(root / "labels" / "case_001.nii.gz").dataobj).astype(np.float32)
    mask[5, 5, 5] = 0.5
    nib.save(nib.Nifti1Image(mask, AFFINE), root / "labels" / "case_001.nii.gz")


def _empty(root):
    for p in [*root.glob("images/*"), *root.glob("labels/*")]:
        p.unlink()


@pytest.mark.parametrize(
    "change, named",
    [
        (_missing_mask, r"case_001\.nii\.gz has no mask"),
        (_orphan_mask, r"case_003\.nii\.gz has no image"),
        (_shape, r"case 'case_000'.*\(32, 32, 31\)"),
        (_affine, r"case 'case_002'.*different affines"),
        (_outside, r"case 'case_004'.*7"),
        (_float, r"case 'case_001'.*not class ids"),
        (_empty, r"holds no cases"),
    ],
    ids=["missing-mask", "orphan-mask", "shape", "affine", "ids-outside", "float-mask", "empty"],
)
def test_bad_folders_are_named_before_a_run_folder_exists(tmp_path, vols, change, named):
    root = write_folder(vols, tmp_path / "seg")
    change(root)
    if change is _outside:  # the classes come from a validation folder's masks, which lack id 7
        val = write_folder(SyntheticSegVolumes(2, shape=(32, 32, 32), seed=9), tmp_path / "val")
        with pytest.raises(SegmentationDataError, match=named):
            _job("unet3d", data=val, val=root, patch=32)
    else:
        with pytest.raises(SegmentationDataError, match=named):
            _job("unet3d", data=root, patch=32)


def test_cli_names_the_bad_case_without_a_traceback(tmp_path, vols, capsys):
    from nbtools import cli

    root = write_folder(vols, tmp_path / "seg")
    _missing_mask(root)
    code = cli.main(
        ["train", "unet3d", "--data", str(root), "--patch", "32", "--run-dir", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "case_001.nii.gz has no mask" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_predict_writes_nifti_masks_with_the_images_affine_and_a_table_agreeing_with_monai(tmp_path, vols):
    run_dir = _hand_made_run(
        _job("unet3d", data=write_folder(vols, tmp_path / "seg"), patch=32), tmp_path / "run"
    )
    spacing = np.diag([0.8, 1.1, 2.5, 1.0])
    spacing[:3, 3] = (5.0, -7.0, 12.0)
    new = write_folder(
        SyntheticSegVolumes(2, shape=(32, 40, 36), num_classes=3, seed=11), tmp_path / "new", affine=spacing
    )
    masks = nbt.predict(run_dir, new, tta=False)
    assert isinstance(masks, SegPredictions) and masks.labelled and len(masks) == 2
    table = masks.save(tmp_path / "masks")
    rows = _rows(table)
    assert [r["case"] for r in rows] == ["case_000", "case_001"]
    for row in rows:
        image = nib.load(new / "images" / f"{row['case']}.nii.gz")
        written = nib.load(row["mask"])
        assert Path(row["mask"]).name == f"{row['case']}.nii.gz"
        assert np.allclose(written.affine, image.affine) and written.shape == image.shape
        assert written.header.get_zooms() == image.header.get_zooms()
        assert written.get_data_dtype() == np.uint8 and int(written.header["sform_code"]) == int(
            image.header["sform_code"]
        )
        pred = np.asarray(written.dataobj)
        truth = np.asarray(nib.load(new / "labels" / f"{row['case']}.nii.gz").dataobj)
        ref = _monai_dice(pred, truth, 3)
        for k, name in enumerate(["class_1", "class_2"]):
            got = float(row[f"dice_{name}"]) if row[f"dice_{name}"] else math.nan
            assert got == pytest.approx(float(ref[k]), abs=1e-6, nan_ok=True)
            n = int((pred == k + 1).sum())
            assert int(row[f"voxels_{name}"]) == n
            assert float(row[f"ml_{name}"]) == pytest.approx(n * voxel_volume_ml(spacing), rel=1e-6)


def test_predict_on_images_without_masks_writes_no_dice(tmp_path, vols):
    run_dir = _hand_made_run(_job("unet3d"), tmp_path / "run")  # the embedded demo's run
    new = write_folder(SyntheticSegVolumes(1, shape=(32, 32, 32), seed=4), tmp_path / "new")
    for p in (new / "labels").iterdir():
        p.unlink()
    (new / "labels").rmdir()
    masks = nbt.predict(run_dir, new, tta=True)  # 8 flips of D/H/W, each undone
    assert not masks.labelled and set(masks.rows[0]) == {
        "voxels_class_1",
        "ml_class_1",
        "voxels_class_2",
        "ml_class_2",
    }
    assert masks.masks[0].shape == (32, 32, 32) and masks.masks[0].dtype == np.uint8


def test_unet2d_predict_writes_png_masks_at_the_images_own_size(tmp_path):
    root = write_folder(SyntheticSegImages(5, size=32, num_classes=2, seed=0, raw=True), tmp_path / "png")
    job = _job("unet2d", data=root, size=32)
    assert job.meta["data"]["ndim"] == 2 and job.train_data[0][0].shape == (3, 32, 32)
    run_dir = _hand_made_run(job, tmp_path / "run")
    new = write_folder(SyntheticSegImages(2, size=40, num_classes=2, seed=5, raw=True), tmp_path / "new")
    for p in [*new.glob("images/*.png"), *new.glob("labels/*.png")]:  # not square, not the model's size
        Image.open(p).crop((0, 0, 40, 36)).save(p)
    table = nbt.predict(run_dir, new).save(tmp_path / "masks")
    for row in _rows(table):
        pred = np.asarray(Image.open(row["mask"]))
        truth = np.asarray(Image.open(new / "labels" / f"{row['case']}.png"))
        assert Path(row["mask"]).suffix == ".png" and pred.shape == truth.shape == (36, 40)
        ref = float(_monai_dice(pred, truth, 2)[0])
        got = float(row["dice_class_1"]) if row["dice_class_1"] else math.nan
        assert got == pytest.approx(ref, abs=1e-6, nan_ok=True)
        assert int(row["voxels_class_1"]) == int((pred == 1).sum()) and "ml_class_1" not in row


def test_cache_dir_gives_the_same_items_and_a_rewritten_mask_is_read_again(tmp_path, vols):
    from nbtools.data import SegmentationFolder

    root = write_folder(vols, tmp_path / "seg")
    plain = SegmentationFolder(root, patch=None)
    cached = SegmentationFolder(root, patch=None, cache_dir=tmp_path / "cache")
    for i in range(2):
        x, y = cached[i]  # builds the entries
        assert torch.equal(x, plain[i][0]) and torch.equal(y, plain[i][1])
    assert len(list((tmp_path / "cache").iterdir())) == 4  # an image and a mask per case
    assert torch.equal(cached[0][0], plain[0][0])  # read from the cache
    mask = np.asarray(nib.load(root / "labels" / "case_000.nii.gz").dataobj).copy()
    mask[:] = 0
    nib.save(nib.Nifti1Image(mask, AFFINE), root / "labels" / "case_000.nii.gz")
    assert int(cached[0][1].sum()) == 0  # stale entry: rebuilt from the new file


def _check_table_against_files(table: Path, labels: Path, suffix: str, n_classes: int) -> None:
    for row in _rows(table):
        mask = Path(row["mask"])
        assert mask.name == row["case"] + suffix
        if suffix == ".png":
            pred, truth = np.asarray(Image.open(mask)), np.asarray(Image.open(labels / mask.name))
        else:
            pred, truth = (np.asarray(nib.load(p).dataobj) for p in (mask, labels / mask.name))
        ref = _monai_dice(pred, truth, n_classes)
        names = [k[len("dice_") :] for k in row if k.startswith("dice_")]
        assert len(names) == n_classes - 1
        for k, name in enumerate(names):
            got = float(row[f"dice_{name}"]) if row[f"dice_{name}"] else math.nan
            assert got == pytest.approx(float(ref[k]), abs=1e-6, nan_ok=True)


@pytest.mark.slow
def test_cli_trains_unet3d_on_a_nifti_folder_and_predicts_masks_with_its_affine(tmp_path, vols, capsys):
    from nbtools import cli

    root = write_folder(vols, tmp_path / "seg")
    run_dir = tmp_path / "run"
    train = ["train", "unet3d", "--data", str(root), "--patch", "32", "--run-dir", str(run_dir), "--smoke"]
    assert cli.main([*train, "--epochs", "1", "--batch-size", "2"]) == 0
    said = capsys.readouterr().out
    assert "val_dice" in said and "classes: 0 background, 1 class_1, 2 class_2" in said
    new = write_folder(SyntheticSegVolumes(2, shape=(32, 36, 40), seed=8), tmp_path / "new")
    out = tmp_path / "masks"
    assert cli.main(["predict", str(run_dir), "--data", str(new), "--out", str(out)]) == 0
    assert "wrote 2 masks" in capsys.readouterr().out
    for case in ("case_000", "case_001"):
        written, image = nib.load(out / f"{case}.nii.gz"), nib.load(new / "images" / f"{case}.nii.gz")
        assert np.allclose(written.affine, image.affine) and written.shape == image.shape
    _check_table_against_files(out / "cases.csv", new / "labels", ".nii.gz", 3)


@pytest.mark.slow
def test_cli_trains_unet2d_on_png_files_and_predicts_png_masks(tmp_path, capsys):
    from nbtools import cli

    root = write_folder(SyntheticSegImages(6, size=48, seed=0, raw=True), tmp_path / "png", palette=True)
    run_dir = tmp_path / "run"
    train = ["train", "unet2d", "--data", str(root), "--size", "32", "--run-dir", str(run_dir), "--smoke"]
    assert cli.main([*train, "--epochs", "1"]) == 0
    out = tmp_path / "masks"
    assert cli.main(["predict", str(run_dir), "--data", str(root), "--out", str(out), "--tta"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"case_{i:03d}.png" for i in range(6)]
    assert np.asarray(Image.open(out / "case_000.png")).shape == (48, 48)  # the image's size, not 32
    _check_table_against_files(out / "cases.csv", root / "labels", ".png", 2)


def test_report_of_a_segmentation_run_shows_dice_per_case_not_a_confusion_matrix(tmp_path):
    run_dir = _hand_made_run(_job("unet3d"), tmp_path / "run")
    dice = torch.tensor([[0.9, float("nan")], [0.5, 0.7], [0.1, 0.3]], dtype=torch.float64)
    best = {"epoch": 2, "dice_per_case": dice, "classes": ["background", "liver", "tumour"]}
    torch.save(best, run_dir / "best_val.pt")
    report = nbt.viz.report(run_dir)
    assert "dice_per_case" in report.figures and "confusion_matrix" not in report.figures
    ax = report.figures["dice_per_case"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["liver", "tumour\n(1 left out)"]
    assert (run_dir / "dice_per_case.png").is_file()
