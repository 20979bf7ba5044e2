"""Recipes on the user's own files (NIfTI and PNG, written here): train, resume on exactly those files,
refuse a resume on changed files naming them, and carry on when the folder only moved."""

import shutil

import numpy as np
import pytest
import torch

import nbtools as nbt
from nbtools import recipes
from tests.helpers import StopAfter, assert_same, without_times
from tests.user_files import write_nifti_csv, write_nifti_folder, write_png_folder

SHAPE = (16, 16, 16)  # the files are 10^3 and padded: the smallest a ResNet-3D takes
ARGS = dict(shape=SHAPE, smoke=True, batch_size=4, checkpoint_every_minutes=None)


def _paths(ds) -> list[str]:
    base = ds.dataset if isinstance(ds, torch.utils.data.Subset) else ds
    idx = ds.indices if isinstance(ds, torch.utils.data.Subset) else range(len(ds))
    return [base.paths[i].name for i in idx]


def _trained(tmp_path, epochs=1, **kw):
    vols = write_nifti_folder(tmp_path / "vols")
    job = recipes.make_job("resnet3d", data=str(vols), **{**ARGS, "epochs": epochs, **kw})
    job.fit(tmp_path / "run", verbose=False)
    return vols, job


def test_a_folder_run_resumed_through_load_job_trains_on_the_same_files_bit_identically(tmp_path, capsys):
    vols = write_nifti_folder(tmp_path / "vols")  # benign 8, malignant 6
    args = dict(data=str(vols), **{**ARGS, "epochs": 3})
    straight = recipes.make_job("resnet3d", **args).fit(tmp_path / "straight", verbose=False)
    out = capsys.readouterr().out
    assert "positive class: 'malignant' (label 1; the second in sorted order" in out
    assert "stratified 20% hold-out of it (seed 0): 11 train, 3 val" in out
    job = recipes.make_job("resnet3d", **args)
    augment, stop = job.batch_transform, StopAfter(3)  # 11 files, batch 4: 2 full batches per epoch

    def disconnect_then_augment(x, y):
        return augment(*stop(x, y))

    job.batch_transform = disconnect_then_augment
    with pytest.raises(StopAfter.Disconnect):
        job.fit(tmp_path / "resumed", verbose=False)
    again = recipes.load_job(tmp_path / "resumed")
    assert (
        "data: the same files as the run was trained on (14 files, 11 train, 3 val)"
        in capsys.readouterr().out
    )
    assert (len(again.train_data), len(again.val_data)) == (11, 3)
    assert _paths(again.val_data) == _paths(job.val_data)
    resumed = again.fit(tmp_path / "resumed", resume="latest", verbose=False)
    assert [h["step"] for h in resumed.history] == [2, 4, 6]  # steps per epoch: the same 11 files
    assert_same(straight.model.state_dict(), resumed.model.state_dict())
    assert without_times(straight.history) == without_times(resumed.history)
    data = resumed.meta["data"]
    assert data["classes"] == ["benign", "malignant"] and data["positive"] == "malignant"
    assert data["split"] | {"val_sha256": None} == {
        "kind": "holdout", "fraction": 0.2, "seed": 0, "n_train": 11, "n_val": 3, "val_sha256": None
    }  # fmt: skip
    assert data["source"]["data"] == str(vols) and data["source"]["data_resolved"] == str(vols.resolve())
    files = data["fingerprint"]["train"]["files"]
    assert len(files) == 14 and files[0][0] == "benign/case_000.nii.gz" and files[0][2] == "benign"
    assert files[0][1] == (vols / "benign/case_000.nii.gz").stat().st_size


def test_a_csv_with_a_separate_validation_folder(tmp_path):
    csv = write_nifti_csv(tmp_path / "train")  # 12 scans: lesion 4, clear 8, names in the CSV
    val = write_nifti_folder(tmp_path / "val", {"clear": 3, "lesion": 2}, seed=1)
    job = recipes.make_job("resnet3d", data=str(csv), val=str(val), **{**ARGS, "epochs": 1})
    assert (len(job.train_data), len(job.val_data)) == (12, 5)
    assert job.val_data.classes == job.train_data.classes == ["clear", "lesion"]
    assert job.meta["data"]["split"] == {"kind": "folder", "n_train": 12, "n_val": 5}
    job.fit(tmp_path / "run", verbose=False)
    again = recipes.load_job(tmp_path / "run", epochs=2)
    assert _paths(again.val_data) == _paths(job.val_data)
    assert again.fit(tmp_path / "run", resume="latest", verbose=False).epoch == 2
    (val / "lesion" / "case_101.nii.gz").unlink()
    with pytest.raises(recipes.DataChangedError, match=r"1 removed \(lesion/case_101\.nii\.gz\)"):
        recipes.load_job(tmp_path / "run")


def test_the_positive_class_is_label_1_and_can_be_chosen(tmp_path):
    vols = write_nifti_folder(tmp_path / "vols")
    job = recipes.make_job("resnet3d", data=str(vols), positive="benign", **ARGS)
    folder = job.train_data.dataset
    assert folder.classes == ["malignant", "benign"] and job.meta["data"]["positive"] == "benign"
    assert all(folder.labels[i] == (p.parent.name == "benign") for i, p in enumerate(folder.paths))
    with pytest.raises(
        ValueError, match=r"positive='cancer' is not one of the classes \['benign', 'malignant'\]"
    ):
        recipes.make_job("resnet3d", data=str(vols), positive="cancer", **ARGS)


def test_a_removed_relabelled_or_resized_file_stops_the_resume_naming_it(tmp_path):
    vols, _ = _trained(tmp_path)
    (vols / "benign/case_003.nii.gz").unlink()
    with pytest.raises(recipes.DataChangedError, match=r"1 removed \(benign/case_003\.nii\.gz\)") as e:
        recipes.load_job(tmp_path / "run")
    assert "new run_dir" in str(e.value) and "allow_changed_data=True" in str(e.value)
    write_nifti_folder(vols)  # the same files again: the resume is allowed
    recipes.load_job(tmp_path / "run")
    shutil.move(vols / "benign/case_004.nii.gz", vols / "malignant/case_004.nii.gz")
    with pytest.raises(
        recipes.DataChangedError, match=r"relabelled \(case_004\.nii\.gz: benign -> malignant\)"
    ):
        recipes.load_job(tmp_path / "run")
    shutil.move(vols / "malignant/case_004.nii.gz", vols / "benign/case_004.nii.gz")
    with open(vols / "benign/case_005.nii.gz", "ab") as f:
        f.write(b"\0" * 10)
    with pytest.raises(
        recipes.DataChangedError, match=r"resized \(benign/case_005\.nii\.gz: \d+ -> \d+ bytes"
    ):
        recipes.load_job(tmp_path / "run")


def test_allow_changed_data_resumes_and_records_the_change(tmp_path, capsys):
    vols, _ = _trained(tmp_path)
    write_nifti_folder(vols, {"benign": 9}, seed=3)  # case_008.nii.gz is new
    job = recipes.load_job(tmp_path / "run", epochs=2, allow_changed_data=True)
    assert "data changed, resuming anyway" in capsys.readouterr().out
    run = job.fit(tmp_path / "run", resume="latest", verbose=False)
    [change] = run.meta["data"]["changes"]
    assert "1 file added (benign/case_008.nii.gz)" in change["change"]
    assert run.meta["data"]["fingerprint"]["train"]["n_files"] == 15 and run.epoch == 2
    recipes.load_job(tmp_path / "run")  # the changed data is now the run's data


def test_a_moved_folder_with_the_same_files_continues_at_its_new_place(tmp_path, capsys):
    vols, _ = _trained(tmp_path)
    moved = tmp_path / "drive" / "MyDrive" / "vols"
    moved.parent.mkdir(parents=True)
    shutil.move(vols, moved)
    with pytest.raises(
        FileNotFoundError, match=r"not there: mount Google Drive.*load_job\(run_dir, data=NEW_PATH\)"
    ):
        recipes.load_job(tmp_path / "run")
    job = recipes.load_job(tmp_path / "run", data=str(moved), epochs=2)
    assert f"data moved: {vols.resolve()} -> {moved.resolve()}; the same 14 files" in capsys.readouterr().out
    run = job.fit(tmp_path / "run", resume="latest", verbose=False)
    assert run.epoch == 2 and run.meta["args"]["data"] == str(moved)
    assert run.meta["data"]["moves"] == [
        {"part": "train", "from": str(vols.resolve()), "to": str(moved.resolve())}
    ]
    assert recipes.load_job(tmp_path / "run").meta["args"]["data"] == str(moved)  # found there from now on


def test_focal2d_on_a_png_folder_names_its_classes_in_the_figures(tmp_path):
    pages = write_png_folder(tmp_path / "pages")  # authentic 10, forged 6, 20x23 px
    job = recipes.make_job("focal2d", data=str(pages), size=32, smoke=True, epochs=2, batch_size=4)
    x, y = job.train_data[0]
    assert y in (0, 1) and x.shape == (3, 32, 32) and job.val_data[0][0].shape == (3, 32, 32)
    assert (len(job.train_data), len(job.val_data)) == (12, 4)
    prior = torch.sigmoid(job.model.classifier.fc.bias).item()  # the positive rate of the training part
    assert prior == pytest.approx(
        np.mean(job.train_data.dataset.dataset.labels[job.train_data.dataset.indices])
    )
    run = job.fit(tmp_path / "run", verbose=False)
    assert [h["step"] for h in run.history] == [3, 6]
    ticks = nbt.viz.report(run).figures["confusion_matrix"].axes[0].get_xticklabels()
    assert [t.get_text() for t in ticks] == ["authentic", "forged"]
    again = recipes.load_job(tmp_path / "run", epochs=3)
    assert _paths(again.val_data.dataset) == _paths(job.val_data.dataset) and len(again.train_data) == 12
    with pytest.raises(ValueError, match="two-class recipe"):
        recipes.make_job("focal2d", data=str(write_png_folder(tmp_path / "three", {"a": 2, "b": 2, "c": 2})))


def test_a_demo_run_keeps_its_meta_and_refuses_a_data_location(tmp_path):
    job = recipes.make_job("resnet3d", smoke=True, n_train=8, n_val=4, epochs=1, batch_size=4)
    assert set(job.meta) == {"recipe", "args"} and job.data_record is None
    job.fit(tmp_path, verbose=False)
    with pytest.raises(ValueError, match="embedded demo data; drop data="):
        recipes.load_job(tmp_path, data="somewhere")


def test_a_plain_fit_run_is_told_to_resume_with_fit_and_its_own_objects(tmp_path):
    from torch import nn

    from tests.helpers import NoisyBlobs, small_cnn

    cfg = nbt.TrainConfig(epochs=1, batch_size=16, checkpoint_every_minutes=None)
    args = (small_cnn(), NoisyBlobs(32), NoisyBlobs(16, seed=1), nn.CrossEntropyLoss(), cfg, tmp_path)
    nbt.fit(*args, verbose=False)
    with pytest.raises(nbt.runs.RunExistsError) as e:
        nbt.fit(*args, verbose=False)
    assert 'call fit(..., resume="latest") with your own objects again' in str(e.value)
    with pytest.raises(
        ValueError, match=r"not trained from a recipe.*resume='latest'\) with the same model, data"
    ):
        recipes.load_job(tmp_path)
