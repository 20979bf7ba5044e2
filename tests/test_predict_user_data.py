"""predict on a run trained on the user's own folder (make_job(data=...)): the model is rebuilt with
the folder's classes without the data, and files given by path are read exactly as training read them
(the validation files' logits equal fit's own at the best epoch)."""

import numpy as np
import torch

import nbtools as nbt
from nbtools import recipes
from tests.user_files import write_nifti_folder, write_png_folder


def _val_rows(preds, job) -> list[int]:
    """Rows of `preds` (a prediction over the whole folder) that are the run's validation files."""
    split = job.val_data
    if not isinstance(split, torch.utils.data.Subset):  # focal2d wraps the hold-out for normalization
        split = split.dataset
    names = [str(split.dataset.paths[i]) for i in split.indices]
    return [preds.paths.index(n) for n in names]


def test_a_three_class_nifti_run_predicts_its_folder_by_path(tmp_path):
    vols = write_nifti_folder(tmp_path / "vols", {"benign": 6, "cyst": 5, "malignant": 5})
    job = recipes.make_job("resnet3d", data=str(vols), shape=16, smoke=True, epochs=1, batch_size=4)  # a cube
    job.fit(tmp_path / "run", verbose=False)
    preds = nbt.predict(tmp_path / "run", str(vols))  # a fresh model: 3 outputs, from the run's record
    assert preds.classes == ["benign", "cyst", "malignant"] and preds.probs.shape == (16, 3)
    np.testing.assert_allclose(preds.probs.sum(1), 1.0, atol=1e-12)
    saved = torch.load(tmp_path / "run" / "best_val.pt", weights_only=True)
    assert torch.equal(torch.from_numpy(preds.logits[_val_rows(preds, job)]), saved["logits"])
    preds.to_csv(tmp_path / "p.csv")
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "path,label,predicted,prob_benign,prob_cyst,prob_malignant,weights,threshold"
    assert rows[1].endswith(",best,") and len(rows) == 17  # the most probable of three: no threshold


def test_a_png_run_predicts_its_folder_by_path_as_training_read_it(tmp_path):
    pages = write_png_folder(tmp_path / "pages")  # authentic 10, forged 6
    job = recipes.make_job("focal2d", data=str(pages), size=32, smoke=True, epochs=1, batch_size=4)
    job.fit(tmp_path / "run", verbose=False)
    preds = nbt.predict(tmp_path / "run", str(pages))
    assert preds.classes == ["authentic", "forged"] and preds.probs.shape == (16, 2)
    saved = torch.load(tmp_path / "run" / "best_val.pt", weights_only=True)
    got = torch.from_numpy(preds.logits[_val_rows(preds, job)]).reshape(saved["logits"].shape)
    assert torch.equal(got, saved["logits"])
