"""Label checks for `validate_dataset`: whole numbers in [0, num_classes), counted per class."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nbtools.data.report import DataIssue


class LabelCheck:
    """Collects labels sample by sample (or many at once) and checks them all in one vectorised pass.

    A label is a scalar (int, float, bool, 0-d or one-element tensor/array) or, for segmentation, a
    mask tensor/array whose every value must pass the same checks. Counts cover scalar labels only.
    """

    def __init__(self, num_classes: int | None) -> None:
        self.num_classes = num_classes
        self.parts: list[tuple[Sequence, np.ndarray]] = []  # (names, float64 values) of scalar labels
        self.names: list[Any] = []
        self.values: list[float] = []
        self.found: list[DataIssue] = []

    def add(self, name: Any, y: Any) -> None:
        if isinstance(y, (bool, int, float, np.number)):
            self.names.append(name)
            self.values.append(float(y))
            return
        if isinstance(y, (torch.Tensor, np.ndarray)):
            t = torch.as_tensor(y)
            if t.numel() == 1:
                self.names.append(name)
                self.values.append(float(t.reshape(())))
            elif t.is_complex() or not t.numel():
                self.found.append(
                    DataIssue(name, "label", f"label tensor of shape {tuple(t.shape)}, dtype {t.dtype}")
                )
            else:
                self._masks([name], t.unsqueeze(0))
            return
        self.found.append(
            DataIssue(
                name, "label", f"label {y!r} (a {type(y).__name__}) is not a number; use int class indices"
            )
        )

    def add_many(self, names: Sequence, y: torch.Tensor) -> None:
        """y (N,) or (N, 1): scalar labels; (N, ...): masks."""
        if y.is_complex():
            raise TypeError(f"labels must be real numbers, got dtype {y.dtype}")
        if y.dim() == 1 or (y.dim() == 2 and y.shape[1] == 1):
            self.parts.append((names, y.reshape(-1).double().cpu().numpy()))
        else:
            self._masks(names, y)

    def _masks(self, names: Sequence, y: torch.Tensor) -> None:
        flat = y.flatten(1).double()
        finite = torch.isfinite(flat).all(dim=1)
        safe = torch.where(torch.isfinite(flat), flat, 0.0)
        whole = (safe == safe.round()).all(dim=1)
        lo, hi = safe.amin(dim=1), safe.amax(dim=1)
        top = self.num_classes if self.num_classes is not None else math.inf
        bad = ~finite | ~whole | (lo < 0) | (hi >= top)
        for j in torch.nonzero(bad).flatten().tolist():
            what = [] if finite[j] else ["non-finite values"]
            what += [] if whole[j] else ["values that are not whole numbers"]
            detail = f"label mask has {' and '.join(what) or 'values'} (finite min {lo[j]:g}, max {hi[j]:g})"
            self.found.append(DataIssue(names[j], "label", detail + self._range()))

    def _range(self) -> str:
        return f"; expected [0, {self.num_classes})" if self.num_classes is not None else "; expected >= 0"

    def _scalars(self) -> tuple[list, np.ndarray]:
        names = [n for part, _ in self.parts for n in part] + self.names
        values = np.concatenate([v for _, v in self.parts] + [np.asarray(self.values, dtype=np.float64)])
        return names, values

    def issues(self) -> list[DataIssue]:
        names, v = self._scalars()
        found = list(self.found)
        top = self.num_classes if self.num_classes is not None else np.inf
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(v) | (v != np.round(v)) | (v < 0) | (v >= top)
        for j in np.flatnonzero(bad):
            val = v[j]
            if not np.isfinite(val):
                why = "is not finite"
            elif val != round(val):
                why = "is not a whole number (class labels are 0, 1, ...)"
            elif val < 0:
                why = "is negative"
            else:
                why = f"is not in [0, {self.num_classes}) (num_classes={self.num_classes})"
            found.append(DataIssue(names[j], "label", f"label {val:g} {why}"))
        return found

    def stats(self) -> dict[str, Any]:
        _, v = self._scalars()
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(v) & (v == np.round(v)) & (v >= 0)
        if self.num_classes is not None:
            ok &= v < self.num_classes
        if not ok.any():
            return {"label_counts": None, "imbalance": None}
        classes, counts = np.unique(v[ok].astype(np.int64), return_counts=True)
        label_counts = {int(c): int(k) for c, k in zip(classes, counts)}
        if self.num_classes is not None:
            label_counts = {c: label_counts.get(c, 0) for c in range(self.num_classes)}
        smallest = min(label_counts.values())
        imbalance = max(label_counts.values()) / smallest if smallest else math.inf
        return {"label_counts": label_counts, "imbalance": float(imbalance)}
