import numpy as np
import pytest
import torch

import nbtools as nbt
from nbtools.viz.viewers import image_grid, slice_viewer


def test_slice_viewer_follows_its_sliders():
    ds = nbt.data.SyntheticVolumes(n=3, shape=(16, 20, 24), seed=0)
    viewer = slice_viewer(ds)
    sample, axis, slider, image = viewer.children
    assert slider.max == 15 and slider.value == 8
    first = image.value
    slider.value = 3
    assert image.value != first
    axis.value = "sagittal (W)"
    assert slider.max == 23 and slider.value == 12
    shown = image.value
    sample.value = 2
    assert image.value != shown


def test_slice_viewer_takes_one_volume_and_rejects_wrong_shapes():
    viewer = slice_viewer(torch.zeros(1, 16, 16, 16))
    assert viewer.children[0].disabled
    with pytest.raises(ValueError, match=r"\(D, H, W\) or \(1, D, H, W\).*\(16, 16\)"):
        slice_viewer(np.zeros((16, 16)))


def test_image_grid_labels_each_sample():
    data = [(torch.randn(3, 8, 8), i % 2) for i in range(5)]
    fig = image_grid(data, n=16, cols=4)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["0: label 0", "1: label 1", "2: label 0", "3: label 1", "4: label 0"]


def test_checkpoint_picker_offers_latest_then_each_checkpoint_and_skips_corrupt_ones(tmp_path):
    job = nbt.recipes.make_job(
        "resnet3d", smoke=True, n_train=8, n_val=4, epochs=3, checkpoint_every_minutes=None
    )
    job.fit(tmp_path, verbose=False)
    (tmp_path / "epoch_002.pt").write_bytes(b"cut off by a disconnect")
    picker = nbt.viz.checkpoint_picker(tmp_path)
    assert picker.value == "latest"
    assert [v for _, v in picker.options] == ["latest", 3, 1]
    assert picker.options[0][0].startswith("latest (epoch 3 · step")
    assert nbt.find_checkpoint(tmp_path, picker.value).epoch == 3
    with pytest.raises(ValueError, match=r"no checkpoint 2 .*\['latest', 3, 1\]"):
        nbt.viz.checkpoint_picker(tmp_path, value=2)
    with pytest.raises(FileNotFoundError, match="no loadable checkpoint"):
        nbt.viz.checkpoint_picker(tmp_path / "empty")
