"""Looking at the data: an ipywidgets slice viewer for volumes and a grid of 2D samples.

Both render with matplotlib's Agg backend to PNG bytes: the slice viewer puts them in an
`ipywidgets.Image`, so moving a slider swaps one picture instead of appending output.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib.figure import Figure

AXES = {"axial (D)": 0, "coronal (H)": 1, "sagittal (W)": 2}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _volume(item) -> tuple[np.ndarray, object]:
    """(D, H, W) float array and the label from a sample, a (1, D, H, W) tensor or a (D, H, W) array."""
    x, y = item if isinstance(item, (tuple, list)) else (item, None)
    v = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if v.ndim == 4:
        if v.shape[0] != 1:
            raise ValueError(
                f"slice_viewer shows one channel; got a volume of shape {v.shape}, pick a channel first"
            )
        v = v[0]
    if v.ndim != 3:
        raise ValueError(f"slice_viewer needs a (D, H, W) or (1, D, H, W) volume, got shape {v.shape}")
    return v.astype(np.float32), (int(y) if isinstance(y, (int, np.integer, torch.Tensor)) else y)


def slice_png(volume: np.ndarray, axis: int, index: int, title: str = "", vmin=None, vmax=None) -> bytes:
    """One slice of a (D, H, W) volume as PNG bytes, on a fixed intensity scale."""
    img = np.take(volume, index, axis=axis)
    fig = Figure(figsize=(3.6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax)
    ax.set_title(title or f"axis {axis}, slice {index}", fontsize=9)
    ax.axis("off")
    return _png(fig)


def slice_viewer(data, index: int = 0):
    """An ipywidgets viewer: sample slider (for a dataset), axis buttons and a slice slider.

    `data` is a dataset of (volume, label), a list of volumes, or one volume ((1, D, H, W) tensor or
    (D, H, W) array). Returns the widget; display it (the last line of a notebook cell does).

    >>> nbt.viz.slice_viewer(nbt.data.SyntheticVolumes(n=8))   # doctest: +SKIP
    """
    import ipywidgets as w

    single = isinstance(data, (torch.Tensor, np.ndarray))
    n = 1 if single else len(data)
    sample = w.IntSlider(value=index, min=0, max=max(0, n - 1), description="sample", disabled=n == 1)
    axis = w.ToggleButtons(options=list(AXES), description="axis")
    slider = w.IntSlider(value=0, min=0, max=0, description="slice", continuous_update=False)
    image = w.Image(format="png", layout=w.Layout(width="360px"))  # its own size, not the page width
    state: dict = {}

    def load(_=None) -> None:
        volume, label = _volume(data if single else data[sample.value])
        state.update(volume=volume, label=label, vmin=float(volume.min()), vmax=float(volume.max()))
        pick_axis()

    def pick_axis(_=None) -> None:
        # a new sample or axis starts at the middle slice, where a lesion is most likely visible
        depth = state["volume"].shape[AXES[axis.value]]
        slider.max = depth - 1
        slider.value = depth // 2
        draw()

    def draw(_=None) -> None:
        label = "" if state["label"] is None else f"label {state['label']}, "
        title = f"sample {sample.value}: {label}{axis.value} slice {slider.value}"
        image.value = slice_png(
            state["volume"], AXES[axis.value], slider.value, title, state["vmin"], state["vmax"]
        )

    sample.observe(load, names="value")
    axis.observe(pick_axis, names="value")
    slider.observe(draw, names="value")
    load()
    viewer = w.VBox([sample, axis, slider, image])
    viewer.add_class("nbtools-slice-viewer")  # a handle for the browser tests' selectors
    return viewer


def image_grid(data, n: int = 16, cols: int = 8, title: str = "") -> Figure:
    """The first `n` 2D samples of a dataset with their labels; each image min-max scaled for display
    (normalized tensors (C, H, W) and uint8 (H, W, C) arrays both work)."""
    n = min(n, len(data))
    rows = -(-n // cols)
    fig = Figure(figsize=(1.6 * min(cols, n), 1.7 * rows), layout="constrained")
    for i in range(n):
        x, y = data[i]
        img = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
            img = img.transpose(1, 2, 0)
        img = img.astype(np.float32)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-8)
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img.squeeze(), cmap="gray" if img.squeeze().ndim == 2 else None)
        ax.set_title(f"{i}: label {int(y)}", fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig
