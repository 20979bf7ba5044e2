"""Reading samples for `validate_dataset`: every index, in order, in this process or in workers; a sample
whose `__getitem__` raises becomes a `ReadFailure` instead of ending the scan; each sample split into
input and label; and the file behind each index, when the dataset knows it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset


@dataclass(frozen=True)
class ReadFailure:
    """What `ds[i]` raised: the exception's type name and message (picklable, so workers can send it)."""

    error: str
    message: str

    def __str__(self) -> str:
        return f"{self.error}: {self.message}"


class _Guarded(Dataset):
    """`ds[i]`, or a ReadFailure for any exception it raises: a broken file is one issue, not the end."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        try:
            return self.ds[i]
        except Exception as e:  # whatever a user's dataset raises is reported with its index and file
            return ReadFailure(type(e).__name__, str(e))


def read_samples(ds, workers: int) -> Iterator[tuple[int, Any]]:
    """(index, sample or ReadFailure) for every index of `ds`, in order."""
    guarded = _Guarded(ds)
    if workers == 0:
        return ((i, guarded[i]) for i in range(len(ds)))
    # batch_size=None turns collation off: workers hand back samples one by one, any shape.
    loader = DataLoader(guarded, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_as_is)
    return enumerate(loader)


def _as_is(sample: Any) -> Any:
    return sample


def sample_paths(ds) -> list | None:
    """The file behind each index of `ds` (its `.paths`, or the paths of torchvision's `.samples`),
    through Subsets and same-length wrappers such as AlbumentationsDataset (`.dataset`); None when
    unknown."""
    try:
        n = len(ds)
    except TypeError:
        return None
    paths = getattr(ds, "paths", None)
    samples = getattr(ds, "samples", None)  # torchvision's DatasetFolder / ImageFolder: [(path, label)]
    if paths is None and isinstance(samples, list) and all(isinstance(s, tuple) for s in samples[:1]):
        paths = [s[0] for s in samples]
    if paths is not None and not callable(paths):
        try:
            if len(paths) == n:
                return list(paths)
        except TypeError:
            return None
    inner = getattr(ds, "dataset", None)
    if inner is None or inner is ds:
        return None
    below = sample_paths(inner)
    if below is None:
        return None
    if isinstance(ds, Subset):
        return [below[i] for i in ds.indices]
    return below if len(below) == n else None


def is_unlabelled(ds) -> bool:
    """True for a dataset that says its labels are placeholders (`.labeled` False, e.g. a prediction
    folder's -1s), through Subsets and wrappers."""
    while ds is not None:
        if getattr(ds, "labeled", True) is False:
            return True
        ds = getattr(ds, "dataset", None)
    return False


def classes_of(ds) -> list | None:
    """ds.classes when the dataset (or one it wraps: Subsets, transforms) names its classes, else None."""
    while ds is not None:
        classes = getattr(ds, "classes", None)
        if isinstance(classes, (list, tuple)) and classes:
            return list(classes)
        ds = getattr(ds, "dataset", None)
    return None


def labels_of(ds) -> torch.Tensor | None:
    """Every label of `ds` without loading a sample, or None when it does not keep them as a whole:
    its `.labels`, `.targets` or `.y` (a numeric tensor, array or list, one entry per sample; masks
    too), a TensorDataset's second tensor, through Subsets."""
    if isinstance(ds, Subset):
        inner = labels_of(ds.dataset)
        return None if inner is None else inner[torch.as_tensor(list(ds.indices), dtype=torch.long)]
    if isinstance(ds, TensorDataset):
        return ds.tensors[1] if len(ds.tensors) > 1 else None
    for name in ("labels", "targets", "y"):
        values = getattr(ds, name, None)
        if not isinstance(values, (torch.Tensor, np.ndarray, list)) or len(values) != len(ds):
            continue
        if isinstance(values, torch.Tensor):
            return values
        try:
            array = np.asarray(values)
        except ValueError:  # a ragged list: no array of labels
            continue
        if array.dtype.kind in "biuf":  # not strings, not objects
            return torch.as_tensor(array)
    return None


def num_classes_of(ds) -> int | None:
    """len(ds.classes) when the dataset (or one it wraps) names its classes, else None."""
    classes = classes_of(ds)
    return len(classes) if classes is not None else None


def as_tensor(x: Any, what: str) -> torch.Tensor:
    """A tensor or a numeric array as a tensor (no copy); TypeError for strings and objects."""
    if isinstance(x, torch.Tensor):
        return x
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise TypeError(f"{what} must be numeric, got an array of dtype {arr.dtype}")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    with warnings.catch_warnings():
        # a read-only array (np.load(mmap_mode="r")) makes torch warn that writes would be undefined;
        # nothing here writes to it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def split_sample(sample: Any) -> tuple[Any, Any, bool]:
    """A sample as (input, label, has_label)."""
    if isinstance(sample, (tuple, list)):
        if len(sample) == 0:
            raise ValueError("a sample is an empty tuple")
        return sample[0], (sample[1] if len(sample) > 1 else None), len(sample) > 1
    if isinstance(sample, dict):
        x = next((sample[k] for k in ("image", "input", "x", "volume") if k in sample), None)
        has = any(k in sample for k in ("label", "target", "y"))
        y = next((sample[k] for k in ("label", "target", "y") if k in sample), None)
        if x is None:
            raise ValueError(
                f"a dict sample needs an 'image' (or 'input', 'x', 'volume') key, got {list(sample)}"
            )
        return x, y, has
    return sample, None, False


def sample_tensor(x: Any) -> torch.Tensor | None:
    """One sample's input as a tensor, or None when it is not numeric."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (int, float, np.number)) and not isinstance(x, bool):
        return torch.tensor(x)
    try:
        return as_tensor(x, "input")
    except (TypeError, ValueError):
        return None
