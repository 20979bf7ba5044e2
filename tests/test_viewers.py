import io

import numpy as np
import pytest
import torch
from PIL import Image

import nbtools as nbt
from nbtools.viz.viewers import image_grid, mask_overlays, slice_viewer


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


def _png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_a_mask_label_is_shown_beside_the_slice_laid_over_it():
    ds = nbt.data.SyntheticSegVolumes(2, shape=(16, 16, 16), num_classes=3, seed=0)
    plain = _png_array(slice_viewer([x for x, _ in [ds[0]]]).children[3].value)
    with_mask = _png_array(slice_viewer(ds).children[3].value)
    assert with_mask.shape[1] > 1.8 * plain.shape[1]  # the slice, then the slice with its mask
    right = with_mask[:, with_mask.shape[1] // 2 :].astype(int)
    assert (np.abs(right[..., 0] - right[..., 2]) > 60).any()  # colour where the mask is; the scan is grey
    grid = image_grid(nbt.data.SyntheticSegImages(3, size=32, seed=0), n=3, cols=3)
    assert [ax.get_title() for ax in grid.axes] == ["0", "1", "2"] and all(
        len(ax.images) == 2 for ax in grid.axes
    )


def test_mask_overlays_shows_the_slice_with_the_most_foreground():
    image, truth = nbt.data.SyntheticSegVolumes(1, shape=(16, 16, 16), seed=1)[0]
    pred = torch.zeros_like(truth)
    pred[11, 2:5, 2:5] = 1
    fig = mask_overlays([(image, None, pred)], ["case_a"])
    assert fig.axes[0].get_title() == "case_a (slice 11)" and fig.axes[1].texts[0].get_text() == "no mask"
    assert [len(ax.images) for ax in fig.axes] == [1, 1, 2]


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
