"""Embedded synthetic 2D set: scanned "documents", some with a copy-move forgery. Offline, seeded.

The 2D fine-tuning notebook (forged-document detection with Focal Loss) needs a binary image
set that runs without internet, is the same on every machine, and is imbalanced like the real one. A
forgery here is what a copy-move edit leaves: a block of the page pasted elsewhere, slightly brighter or
darker, re-tinted, blurred, rotated or rescaled, so its text lines no longer line up with the page's.
Genuine pages carry look-alikes (shaded form fields, stamps, uneven lighting), so no global statistic
and no single brightness edge gives the label away.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from nbtools.data.augment2d import apply_transform, to_tensor
from nbtools.data.synthetic import item_index

MIN_SIDE = 32  # resnet's stride is 32: smaller pages leave layer4 nothing to see
_LABEL_STREAM, _IMAGE_STREAM = 1, 0  # separate RNG streams: a label never shifts an image's pixels
KINDS = ("brightness", "tint", "blur", "rotate", "rescale")  # forgery kinds, drawn uniformly
_FIELDS = 0.3  # fraction of pages with a shaded form field
_DELTA = (10.0, 24.0)  # brightness change of a pasted block, grey levels


class SyntheticDocuments(Dataset):
    """Map-style dataset of ``(x, y)``: x float32 tensor (3, size, size), ImageNet-normalised; y int in {0, 1}.

    Every page has paper with texture and uneven lighting, 8-14 lines of dark word blocks with
    letter-like gaps, usually a coloured stamp (circle or box), sometimes a shaded, ruled form field, and
    scanner noise and blur. Forged pages (y=1) also carry one copy-move edit: a block of 18-30 % x 25-45 %
    of the page copied from elsewhere on it, changed in one way (see `KINDS`) and pasted over text.

    forged_fraction: each page is forged with this probability (so about, not exactly, this fraction).
    raw=True: samples are the uint8 (size, size, 3) RGB page instead of the tensor, for an albumentations
    pipeline (see `AlbumentationsDataset`). transform: applied to the uint8 page before normalisation
    (an albumentations transform as ``transform(image=img)["image"]``, any other callable as
    ``transform(img)``), in both modes. `labels` (int64 array) gives the labels without drawing a page.

    Measured (size 64, train n=2048 seed 0, validation n=256 seed 1, one run each): resnet2d_attention(
    "resnet18", prior=0.3) from random init (no ImageNet weights offline), AdamW(lr=1e-3), batch 32, flips, reaches validation ROC-AUC 0.73
    after 8 epochs (~100 s on a shared 2-core CPU) and is still climbing; with n=512 it memorises the
    pages and stays near chance for 10+ epochs, so give a from-scratch model a few thousand pages.
    ImageNet-pretrained fine-tuning was not measured here (no internet).

    Page i depends only on (seed, i, size): any index in any order, no cache, and a longer set starts
    with the pages of a shorter one. Use different seeds for training and validation sets.

    >>> ds = SyntheticDocuments(n=64, size=128, forged_fraction=0.3, seed=0)
    >>> x, y = ds[0]
    >>> x.shape, x.dtype
    (torch.Size([3, 128, 128]), torch.float32)
    """

    def __init__(
        self,
        n: int,
        size: int = 128,
        forged_fraction: float = 0.3,
        seed: int = 0,
        raw: bool = False,
        transform: Callable | None = None,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIDE:
            raise ValueError(f"size must be an int >= {MIN_SIDE}, got {size!r}")
        if not 0.0 <= forged_fraction <= 1.0:
            raise ValueError(f"forged_fraction must be in [0, 1], got {forged_fraction!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        self.forged_fraction, self.raw, self.transform = float(forged_fraction), bool(raw), transform
        draws = [np.random.default_rng([self.seed, _LABEL_STREAM, i]).random() for i in range(self.n)]
        self.labels = (np.asarray(draws) < self.forged_fraction).astype(np.int64)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor | np.ndarray, int]:
        i = item_index(index, self)
        page = apply_transform(self.transform, self._generate(i)[0])
        return (page if self.raw else to_tensor(page)), int(self.labels[i])

    def page(self, index: int) -> np.ndarray:
        """Page `index` as uint8 (size, size, 3), before any transform: for plotting."""
        return self._generate(item_index(index, self))[0]

    def forgery(self, index: int) -> dict | None:
        """The edit on page `index` (None if genuine): kind, and source and target boxes (y, x, h, w)."""
        i = item_index(index, self)
        return self._generate(i)[1] if self.labels[i] else None

    def _generate(self, i: int) -> tuple[np.ndarray, dict]:
        rng = np.random.default_rng([self.seed, _IMAGE_STREAM, i])
        s = self.size
        page = _paper(rng, s)
        ink = _text(rng, s)
        colour = (rng.uniform(10, 60) + rng.uniform(-10, 10, 3)).astype(np.float32)
        page = page + (colour - page) * ink[..., None]
        if rng.random() < _FIELDS:  # a shaded, ruled form field: a genuine brightness step, lines aligned
            y, x, h, w = _box(rng, s)
            page[y : y + h, x : x + w] += np.float32(rng.choice([-1, 1]) * rng.uniform(8, 20))
            cv2.rectangle(page, (x, y), (x + w - 1, y + h - 1), colour.tolist(), 1)
        if rng.random() < 0.7:
            page = _stamp(rng, page)

        # The edit is drawn for every page, so that a label never shifts the random stream.
        info = _draw_forgery(rng, s)
        if self.labels[i]:
            page = _apply_forgery(page, info)

        page = cv2.GaussianBlur(page, (0, 0), rng.uniform(0.3, 0.7))  # scanner optics
        grain = rng.uniform(2, 5) * rng.standard_normal((s, s, 1), np.float32)  # mostly luminance
        page += grain + 1.5 * rng.standard_normal((s, s, 3), np.float32)
        return np.clip(page, 0, 255).round().astype(np.uint8), info


def _paper(rng: np.random.Generator, s: int) -> np.ndarray:
    """Light paper (s, s, 3) float: a slightly yellow base, smooth texture and a lighting gradient."""
    base = rng.uniform(222, 248) + np.array([2.0, 0.0, -4.0]) * rng.uniform(0, 2)
    texture = cv2.resize(rng.normal(0, 3, (8, 8)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:s, 0:s] / s - 0.5
    light = rng.uniform(0, 10) * (np.cos(angle) * xx + np.sin(angle) * yy)
    return base.astype(np.float32) + (texture + light.astype(np.float32))[..., None]


def _text(rng: np.random.Generator, s: int) -> np.ndarray:
    """Ink coverage (s, s) in [0, 1]: lines of word blocks with letter gaps and ascenders."""
    ink = np.zeros((s, s), np.float32)
    margin = int(rng.uniform(0.06, 0.12) * s)
    spacing = rng.uniform(0.06, 0.09) * s
    height = max(2, round(spacing * rng.uniform(0.35, 0.5)))
    columns = rng.random(s) < 0.7  # letter gaps, shared by the page like a font's rhythm
    ascend = rng.random(s) < 0.15
    y = margin + rng.uniform(0, spacing)
    while y + height < s - margin:
        top, x = int(y), margin + int(rng.uniform(0, 0.03) * s)
        end = s - margin - (int(rng.uniform(0.1, 0.6) * s) if rng.random() < 0.2 else 0)  # paragraph ends
        while x < end:
            w = min(int(rng.uniform(0.03, 0.12) * s) + 2, end - x)
            ink[top : top + height, x : x + w] = columns[x : x + w]
            up = max(1, height // 2)
            ink[max(0, top - up) : top, x : x + w] = columns[x : x + w] & ascend[x : x + w]
            x += w + max(2, int(0.02 * s))
        y += spacing * (2 if rng.random() < 0.1 else 1)  # a blank line between paragraphs
    return cv2.GaussianBlur(ink, (0, 0), 0.5)


def _box(rng: np.random.Generator, s: int) -> tuple[int, int, int, int]:
    """A block (y, x, h, w) of 18-30 % x 25-45 % of the page, inside it."""
    h, w = int(rng.uniform(0.18, 0.3) * s), int(rng.uniform(0.25, 0.45) * s)
    return int(rng.integers(0, s - h)), int(rng.integers(0, s - w)), h, w


def _stamp(rng: np.random.Generator, page: np.ndarray) -> np.ndarray:
    s = page.shape[0]
    mask = np.zeros((s, s), np.uint8)
    r = int(rng.uniform(0.07, 0.14) * s)
    cy, cx = (int(v) for v in rng.integers(r, s - r, 2))
    thick = max(1, round(s / 64))
    if rng.random() < 0.6:
        cv2.circle(mask, (cx, cy), r, 255, thick)
        cv2.circle(mask, (cx, cy), max(1, int(r * 0.7)), 255, thick)
    else:
        cv2.rectangle(mask, (cx - r, cy - r // 2), (cx + r, cy + r // 2), 255, thick)
    colours = np.array([[200, 40, 50], [40, 70, 190], [120, 50, 160]], np.float32)
    colour = colours[rng.integers(len(colours))]
    alpha = (mask.astype(np.float32) * np.float32(rng.uniform(0.5, 0.8) / 255))[..., None]
    return page + (colour - page) * alpha


def _draw_forgery(rng: np.random.Generator, s: int) -> dict:
    y0, x0, h, w = _box(rng, s)
    for _ in range(20):  # a target that does not sit on its own source
        y1, x1 = int(rng.integers(0, s - h)), int(rng.integers(0, s - w))
        if abs(y1 - y0) > h // 2 or abs(x1 - x0) > w // 2:
            break
    return {
        "kind": KINDS[rng.integers(len(KINDS))],
        "source": (y0, x0, h, w),
        "target": (y1, x1, h, w),
        "delta": float(rng.choice([-1, 1]) * rng.uniform(*_DELTA)),
        "tint": rng.uniform(-10, 10, 3).tolist(),
        "sigma": float(rng.uniform(0.8, 1.4)),  # blur
        "angle": float(rng.choice([-1, 1]) * rng.uniform(3, 9)),  # degrees
        "scale": float(rng.choice([rng.uniform(0.8, 0.9), rng.uniform(1.1, 1.2)])),
    }


def _apply_forgery(page: np.ndarray, f: dict) -> np.ndarray:
    y0, x0, h, w = f["source"]
    y1, x1, _, _ = f["target"]
    patch = page[y0 : y0 + h, x0 : x0 + w].copy()
    kind = f["kind"]
    if kind in ("rotate", "rescale"):
        angle, scale = (f["angle"], 1.0) if kind == "rotate" else (0.0, f["scale"])
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        patch = cv2.warpAffine(patch, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    elif kind == "blur":
        patch = cv2.GaussianBlur(patch, (0, 0), f["sigma"])
    elif kind == "tint":
        patch = patch + np.asarray(f["tint"], np.float32)
    # A pasted block is never quite the page's brightness: a smaller change for the other kinds.
    patch = patch + np.float32(f["delta"] * (1.0 if kind == "brightness" else 0.5))
    out = page.copy()
    out[y1 : y1 + h, x1 : x1 + w] = patch
    return out
