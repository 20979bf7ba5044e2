"""Looking at the data: an ipywidgets slice viewer for volumes and a grid of 2D samples, each with a
segmentation mask laid over the image when the sample's label is one (`(x, mask)` items), and a figure of
chosen cases with their true and predicted masks side by side (`mask_overlays`).

Both render with matplotlib's Agg backend to PNG bytes: the slice viewer puts them in an
`ipywidgets.Image`, so moving a slider swaps one picture instead of appending output.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib.figure import Figure

AXES = {"axial (D)": 0, "coronal (H)": 1, "sagittal (W)": 2}
MASK_CMAP, MASK_ALPHA = "tab10", 0.45  # class c in colour c of tab10 (background left clear)


def _array(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _is_mask(y, spatial: tuple[int, ...]) -> bool:
    return isinstance(y, (np.ndarray, torch.Tensor)) and tuple(y.shape) == tuple(spatial)


def draw_mask(ax, mask: np.ndarray) -> None:
    """Lay the class ids of `mask` (H, W) over what `ax` shows: class c in tab10's colour c, background clear."""
    m = np.asarray(mask)
    ax.imshow(np.ma.masked_where(m == 0, m % 10), cmap=MASK_CMAP, vmin=0, vmax=9, alpha=MASK_ALPHA,
              interpolation="nearest")  # fmt: skip


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _volume(item) -> tuple[np.ndarray, object]:
    """(D, H, W) float array and the label from a sample, a (1, D, H, W) tensor or a (D, H, W) array;
    a label that is a mask over the volume comes back as a (D, H, W) int array."""
    x, y = item if isinstance(item, (tuple, list)) else (item, None)
    v = _array(x)
    if v.ndim == 4:
        if v.shape[0] != 1:
            raise ValueError(
                f"slice_viewer shows one channel; got a volume of shape {v.shape}, pick a channel first"
            )
        v = v[0]
    if v.ndim != 3:
        raise ValueError(f"slice_viewer needs a (D, H, W) or (1, D, H, W) volume, got shape {v.shape}")
    if _is_mask(y, v.shape):
        return v.astype(np.float32), _array(y).astype(np.int64)
    return v.astype(np.float32), (int(y) if isinstance(y, (int, np.integer, torch.Tensor)) else y)


def slice_png(
    volume: np.ndarray, axis: int, index: int, title: str = "", vmin=None, vmax=None, mask=None
) -> bytes:
    """One slice of a (D, H, W) volume as PNG bytes, on a fixed intensity scale; with a (D, H, W) mask,
    the slice beside the same slice with the mask laid over it."""
    img = np.take(volume, index, axis=axis)
    panels = 1 if mask is None else 2
    fig = Figure(figsize=(3.6 * panels, 3.6), layout="constrained")
    for k in range(panels):
        ax = fig.add_subplot(1, panels, k + 1)
        ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax)
        if k == 1:
            draw_mask(ax, np.take(mask, index, axis=axis))
        ax.axis("off")
    fig.suptitle(title or f"axis {axis}, slice {index}", fontsize=9)
    return _png(fig)


def slice_viewer(data, index: int = 0):
    """An ipywidgets viewer: sample slider (for a dataset), axis buttons and a slice slider.

    `data` is a dataset of (volume, label), a list of volumes, or one volume ((1, D, H, W) tensor or
    (D, H, W) array). A label that is a mask over the volume ((volume, mask) items: SegmentationFolder,
    SyntheticSegVolumes) is shown beside the slice, laid over it. Returns the widget; display it (the
    last line of a notebook cell does).

    >>> nbt.viz.slice_viewer(nbt.data.SyntheticVolumes(n=8))   # doctest: +SKIP
    """
    import ipywidgets as w

    single = isinstance(data, (torch.Tensor, np.ndarray))
    n = 1 if single else len(data)
    sample = w.IntSlider(value=index, min=0, max=max(0, n - 1), description="sample", disabled=n == 1)
    axis = w.ToggleButtons(options=list(AXES), description="axis")
    slider = w.IntSlider(value=0, min=0, max=0, description="slice", continuous_update=False)
    image = w.Image(format="png", layout=w.Layout(width="auto"))  # its own size, not the page width
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
        mask = state["label"] if isinstance(state["label"], np.ndarray) else None
        label = "" if state["label"] is None or mask is not None else f"label {state['label']}, "
        title = f"sample {sample.value}: {label}{axis.value} slice {slider.value}"
        image.value = slice_png(
            state["volume"], AXES[axis.value], slider.value, title, state["vmin"], state["vmax"], mask
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
    (normalized tensors (C, H, W) and uint8 (H, W, C) arrays both work); a label that is a mask (H, W)
    is laid over its image."""
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
        if _is_mask(y, img.shape[:2]):
            draw_mask(ax, _array(y))
            ax.set_title(f"{i}", fontsize=8)
        else:
            ax.set_title(f"{i}: label {int(y)}", fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def mask_overlays(cases, titles=None) -> Figure:
    """One row per case: the image, its true mask over it (when known) and the predicted mask over it.

    cases: (image, truth or None, prediction) per case; image (C, *spatial) or (*spatial) (the first
    channel is shown, min-max scaled) or an RGB image (H, W, 3); masks (*spatial) class ids. A volume is shown at the axial slice
    (D) with the most foreground in the truth and the prediction together.
    """
    cases = list(cases)
    fig = Figure(figsize=(7.5, 2.6 * max(1, len(cases))), layout="constrained")
    for r, (image, truth, pred) in enumerate(cases):
        pred = _array(pred)
        img = _array(image).astype(np.float32)
        rgb = img.ndim == 3 and pred.ndim == 2 and img.shape[-1] == 3
        img = img[0] if img.ndim == pred.ndim + 1 and not rgb else img
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-8)
        truth = None if truth is None else _array(truth)
        if pred.ndim == 3:
            fg = (pred > 0) | (truth > 0) if truth is not None else pred > 0
            z = int(fg.reshape(fg.shape[0], -1).sum(1).argmax())
            img, pred, truth = img[z], pred[z], None if truth is None else truth[z]
            where = f" (slice {z})"
        else:
            where = ""
        for k, (name, m) in enumerate((("image", None), ("true mask", truth), ("predicted", pred))):
            ax = fig.add_subplot(len(cases), 3, 3 * r + k + 1)
            ax.imshow(img, cmap=None if rgb else "gray")
            if m is not None:
                draw_mask(ax, m)
            elif k == 1:
                ax.text(0.5, 0.5, "no mask", ha="center", va="center", transform=ax.transAxes, color="w")
            title = (titles[r] if titles else f"case {r}") + where if k == 0 else name
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    return fig
