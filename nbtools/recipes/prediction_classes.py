"""Class names and probabilities of a classification run's predictions: which names the model's outputs
carry (the run's recorded classes, else the data's), and logits turned into probabilities."""

from __future__ import annotations

import logging

import numpy as np
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """(N, 1) logits -> (N, 2) [1 - p, p]; (N, C) -> softmax; float64."""
    z = logits.astype(np.float64)
    if z.shape[1] == 1:
        p = 0.5 * (1.0 + np.tanh(0.5 * z[:, 0]))  # sigmoid without overflow warnings
        return np.stack([1.0 - p, p], axis=1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def recorded_classes(meta: dict) -> list[str] | None:
    classes = meta.get("classes") or (meta.get("data") or {}).get("classes")
    return [str(c) for c in classes] if classes else None


def output_class_names(meta: dict, ds: Dataset, n: int) -> tuple[list[str], bool]:
    """The n class names, and whether the data's labels index them (False when the data names other
    classes than the model has outputs: its labels then mean something else)."""
    recorded = recorded_classes(meta)
    if recorded is not None and len(recorded) != n:
        raise ValueError(
            f"the run records {len(recorded)} classes {recorded}, but the model gives {n} probabilities"
        )
    inner, found = ds, None
    while found is None and inner is not None:
        named = getattr(inner, "classes", None)
        found = [str(c) for c in named] if isinstance(named, (list, tuple)) and named else None
        inner = getattr(inner, "dataset", None)
    if found is not None and len(found) != n:
        log.warning(
            "the data names %d classes %s but the model gives %d probabilities: its labels are left out; "
            "to compare with labels, use the run's classes (classes= of VolumeFolder / ImageFolder)",
            len(found),
            found,
            n,
        )
        return recorded or [str(i) for i in range(n)], False
    if recorded is not None and found is not None and found != recorded:
        log.warning("the data's classes %s are not the run's %s; labels are read by index", found, recorded)
    return recorded or found or [str(i) for i in range(n)], True
