"""Samples that fail to load or to batch, named: the file (or index) and what to do, instead of a stack
trace from inside the DataLoader.

`fit` (and `predict`) read their data through `CheckedSamples`. A sample whose `__getitem__` raises, a
batch whose inputs have different shapes (an image of another size), and an integer label outside the
dataset's classes (or the -1 of an unlabelled dataset, in training) raise `SampleError` naming each bad
sample's index and file. The checks run where the batch is put together (in the loader's worker under
num_workers > 0), on the CPU, before anything reaches the device: on a GPU a label out of range is a
device-side assert in the loss, which leaves the CUDA context unusable until the runtime restarts.
Where the dataset lists its labels (`.labels`, as the folder datasets do), they are all checked when
the loader is built, before the first step.

A clean batch costs next to nothing over `default_collate`: `CheckedSamples.__getitems__` hands the
samples on with their indices (`Batch`), and `collate_checked` looks at them one by one only when
something is wrong: when collating fails (then it looks for inputs of another shape), or when the
collated labels, read once as a list, hold one outside the classes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from nbtools.data.samples import classes_of, is_unlabelled, labels_of, num_classes_of, sample_paths

_SHOW = 5  # bad samples named in one message
_WHOLE = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)  # label dtypes checked as classes
_FIND_ALL = "nbt.validate_dataset(data) lists every bad file in one pass"


class SampleError(ValueError):
    """A sample that cannot be loaded or batched; the message names it (index and file) and what to do."""


class CheckedSamples(Dataset):
    """`data` as it is, sample for sample, with the failures above raised as SampleError.

    need_labels: True for training (an unlabelled dataset is an error); False for prediction, where
    -1 placeholders are expected. The DataLoader fetches whole batches through `__getitems__`, so a
    batch's samples are checked together, by index.
    """

    def __init__(self, data: Dataset, need_labels: bool = True) -> None:
        self.dataset = data
        self.paths = sample_paths(data)
        self.classes = classes_of(data)
        self.num_classes = num_classes_of(data)
        self.unlabelled = is_unlabelled(data)
        self.need_labels = need_labels
        if need_labels:
            self._check_listed_labels(labels_of(data))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """The samples, loaded; `collate_checked` checks their shapes and labels as it batches them."""
        samples, failed = Batch(self, indices), []
        for i in indices:
            try:
                samples.append(self.dataset[i])
            except Exception as e:  # whatever a user's dataset raises gets the sample's index and file
                failed.append((i, e))
        if failed:
            listed = "\n  ".join(f"{self.name(i)}: {type(e).__name__}: {e}" for i, e in failed[:_SHOW])
            more = f"\n  ... and {len(failed) - _SHOW} more in this batch" if len(failed) > _SHOW else ""
            raise SampleError(
                f"{len(failed)} sample{'s' * (len(failed) > 1)} could not be loaded:\n  {listed}{more}\n"
                f"Fix or remove {'those' if len(failed) > 1 else 'that'} "
                f"{'file' if self.paths is not None else 'sample'}{'s' * (len(failed) > 1)} ({_FIND_ALL})."
            ) from failed[0][1]
        return samples

    def name(self, index: int) -> str:
        """ "sample 3 (data/pos/a.png)", or "sample 3" when the dataset does not know its files."""
        path = self.paths[index] if self.paths is not None and 0 <= index < len(self.paths) else None
        return f"sample {index}" + (f" ({path})" if path is not None else "")

    def _check_shapes(self, indices: Sequence[int], samples: list) -> None:
        raw = [getattr(_input(s), "shape", None) for s in samples]
        if raw.count(raw[0]) == len(raw):  # one shape (the common case, checked without converting)
            return
        shapes = [_input_shape(s) for s in samples]
        known = [s for s in shapes if s is not None]
        if len(set(known)) <= 1:
            return
        common = Counter(known).most_common(1)[0][0]
        odd = [(i, s) for i, s in zip(indices, shapes) if s is not None and s != common]
        ok = [i for i, s in zip(indices, shapes) if s == common]
        listed = "; ".join(f"{self.name(i)} is {s}" for i, s in odd[:_SHOW])
        more = f" (and {len(odd) - _SHOW} more)" if len(odd) > _SHOW else ""
        raise SampleError(
            f"samples of one batch have different input shapes: {listed}{more}, while "
            f"{self.name(ok[0])} and {len(ok) - 1} others are {common}. {_fix_for(common)} ({_FIND_ALL})."
        )

    def _check_listed_labels(self, listed: torch.Tensor | None) -> None:
        """Up front, without reading a sample: an unlabelled dataset, and the labels a dataset lists
        (`labels_of`) when they are one whole number per sample (VolumeFolder, ImageFolder)."""
        if self.unlabelled:
            self._check_labels([0], [])
        if listed is None:
            return
        arr = listed.numpy(force=True)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            return
        n = self.num_classes
        bad = np.flatnonzero((arr < 0) | (arr >= n if n is not None else False))
        self._check_labels(bad.tolist(), [(None, int(arr[i])) for i in bad])

    def _check_labels(self, indices: Sequence[int], samples: list) -> None:
        if self.unlabelled:
            raise SampleError(
                f"{self.name(indices[0])} has no label (-1): the dataset is unlabelled (read for prediction, "
                f"labels='auto' or 'ignore'); training needs labels: class sub-folders or a CSV with a "
                f"label column. To apply a trained model to unlabelled files, use nbt.predict."
            )
        n = self.num_classes
        labels = zip(indices, map(_int_label, samples))
        bad = [(i, y) for i, y in labels if y is not None and (y < 0 or (n is not None and y >= n))]
        if not bad:
            return
        allowed = f"0..{n - 1}, the classes {self.classes}" if n is not None else "whole numbers >= 0"
        listed = ", ".join(f"{self.name(i)} has label {y}" for i, y in bad[:_SHOW])
        more = f" (and {len(bad) - _SHOW} more)" if len(bad) > _SHOW else ""
        raise SampleError(
            f"label outside the classes: {listed}{more}; labels must be {allowed}. Correct the label "
            f"(the CSV row or the class folder), or remove the sample ({_FIND_ALL})."
        )


class Batch(list):
    """A batch's samples as `CheckedSamples` loaded them, with their indices, for `collate_checked`."""

    def __init__(self, source: CheckedSamples, indices: Sequence[int]) -> None:
        super().__init__()
        self.source, self.indices = source, indices


def collate_checked(samples: list) -> Any:
    """default_collate, with an error that says what a sample must be when it fails; for a `Batch`,
    one naming the samples of another shape, or with a label outside the classes."""
    checked = samples.source if isinstance(samples, Batch) else None
    try:
        batch = default_collate(samples)
    except (TypeError, RuntimeError) as e:
        if checked is not None:
            checked._check_shapes(samples.indices, samples)  # raises when the input shapes differ
        kinds = sorted({type(s[0] if isinstance(s, (tuple, list)) and s else s).__name__ for s in samples})
        raise SampleError(
            f"a batch of {len(samples)} samples could not be put together ({type(e).__name__}: {e}); inputs "
            f"here are {', '.join(kinds)}. Each sample must be (input, label) with the input a tensor or a "
            f"numeric array of one shape and dtype: convert images to tensors (ImageFolder does), or add a "
            f"to-tensor step to the transform."
        ) from e
    if checked is not None and checked.need_labels and not _labels_in_range(batch, len(samples), checked):
        checked._check_labels(samples.indices, samples)  # names the samples (or finds the labels fine)
    return batch


def _labels_in_range(batch: Any, n: int, checked: CheckedSamples) -> bool:
    """True when the collated labels are one whole number per sample, all in 0..num_classes - 1; False
    when they are not whole numbers (each sample is then looked at) or one is outside."""
    y = batch[1] if isinstance(batch, (tuple, list)) and len(batch) >= 2 else None
    if not isinstance(y, torch.Tensor) or y.shape != (n,) or y.dtype not in _WHOLE:
        return False
    labels = y.tolist()  # one op, however large the batch
    return min(labels) >= 0 and (checked.num_classes is None or max(labels) < checked.num_classes)


def _input(sample: Any) -> Any:
    return sample[0] if isinstance(sample, (tuple, list)) and sample else sample


def _input_shape(sample: Any) -> tuple | None:
    shape = getattr(_input(sample), "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


def _int_label(sample: Any) -> int | None:
    """The sample's label when it is one whole number (int, numpy integer, 0-d integer tensor)."""
    if not isinstance(sample, (tuple, list)) or len(sample) < 2:
        return None
    y = sample[1]
    if type(y) is int:  # the common case first
        return y
    if isinstance(y, bool):
        return None
    if isinstance(y, (int, np.integer)):
        return int(y)
    if isinstance(y, torch.Tensor) and y.ndim == 0 and not (y.is_floating_point() or y.is_complex()):
        return None if y.dtype == torch.bool else int(y)
    if isinstance(y, np.ndarray) and y.ndim == 0 and y.dtype.kind in "iu":
        return int(y)
    return None


def _fix_for(shape: tuple) -> str:
    if len(shape) == 4:  # (C, D, H, W)
        return (
            "Every volume of a batch must have one shape: VolumeFolder(root, shape=(D, H, W)) crops/pads "
            "(or resizes, resize='resize') each volume to it; in a recipe, the shape= option"
        )
    if len(shape) in (2, 3):  # (C, H, W), (H, W, C) or (H, W)
        return (
            "Every image of a batch must have one size: ImageFolder(root, size=N) resizes each to N x N; "
            "in a recipe, the size= option; with your own transform, add a resize to it"
        )
    return "Every sample of a batch must have one input shape"
