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
