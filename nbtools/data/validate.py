"""`validate_dataset`: check every sample of a dataset, tensor or DataLoader and name every bad index.

Unlike a check loop over a DataLoader that stops at the first bad batch, this scans everything and
reports each bad sample by index, kind and file (see `DataReport`), a sample that cannot be read
included. It is fast enough to run on every dataset before every run (`bench/validate_speed.py`; figures
in bench/README.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, SequentialSampler
from tqdm.auto import tqdm

from nbtools.data.chunks import Chunker
from nbtools.data.labels import LabelCheck
from nbtools.data.report import KINDS, DataIssue, DataReport
from nbtools.data.samples import (
    ReadFailure,
    as_tensor,
    is_unlabelled,
    num_classes_of,
    read_samples,
    sample_paths,
    sample_tensor,
    split_sample,
)
from nbtools.data.scan import Moments, scan_chunk

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 << 20  # samples are stacked into chunks of about this size before the fused checks
_PROGRESS_MIN = 2000  # samples: shorter scans finish before a bar is worth drawing


def validate_dataset(
    data: Any,
    max_abs: float | None = 10.0,
    expected_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    num_workers: int = 0,
    *,
    progress: bool | None = None,
) -> DataReport:
    """Check every sample for NaN, Inf, values beyond ±max_abs, odd shapes and dtypes, and bad labels.

    data: a map-style Dataset (samples `x`, `(x, y, ...)` or a dict with "image"/"label"); a tensor
    or array (N, ...); a tuple `(x, y)` of them (a tuple is always read as inputs and labels; a list is
    a list of samples); or a DataLoader. A DataLoader over a map-style dataset is checked through its
    dataset, sample by sample in index order, whatever its sampler: its collate never runs, so samples
    of different shapes are reported instead of crashing the stack, and issues name dataset indices.
    A loader over an IterableDataset is iterated as is and issues name "batch b item j".
    max_abs: finite values beyond ±max_abs are "extreme" (None turns this off; raw CT needs ~4000).
    expected_shape: the shape of one sample, e.g. (1, 32, 32, 32); None takes the most common shape.
    Floating dtypes other than the most common one, and integer or bool inputs, are "dtype" issues.
    num_classes: labels must be whole numbers in [0, num_classes); without it, whole numbers >= 0.
    num_workers: processes reading a Dataset's samples (0: read in this process); a DataLoader's own
    num_workers is used when this is 0. progress: a tqdm bar (None: only for scans of 2000+ samples).
    Channels are each sample's first axis when it has 3+ dims ((C, H, W), (C, D, H, W)), else one.
    A sample whose `__getitem__` raises is a "read" issue (the exception's type and message) and the
    scan goes on, so one call lists every unreadable file. Issues name the file too (DataIssue.path)
    when the dataset has `.paths` (VolumeFolder, ImageFolder; through Subset and AlbumentationsDataset).
    Without num_classes, a dataset's `.classes` gives it; a dataset with `.labeled` False (a prediction
    folder) has its placeholder labels left unchecked. No samples at all is an "empty" issue.

    >>> rep = nbt.validate_dataset(ds, num_classes=2)   # doctest: +SKIP
    >>> print(rep)                                       # doctest: +SKIP
    DataReport: 64 samples checked, 2 with issues (nan 1, extreme 1): NOT OK
      index 3 (data/train/positive/case_017.nii.gz): nan: 12 NaN of 32768 values
      index 9: extreme: 40 values beyond ±10 (finite min -3.2, max 25.1)
      channel 0: mean 0.0012, std 0.9987, min -4.21, max 25.1
      labels: 0: 45, 1: 19 (imbalance 2.37)
    """
    if max_abs is not None and not max_abs > 0:
        raise ValueError(f"max_abs must be > 0 or None, got {max_abs!r}")
    if expected_shape is not None:
        expected_shape = tuple(int(s) for s in expected_shape)
    if num_classes is not None and not (isinstance(num_classes, (int, np.integer)) and num_classes >= 1):
        raise ValueError(f"num_classes must be an int >= 1 or None, got {num_classes!r}")
    if not (isinstance(num_workers, (int, np.integer)) and num_workers >= 0):
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")

    ds = data.dataset if isinstance(data, DataLoader) else data
    mapped = not isinstance(ds, (tuple, torch.Tensor, np.ndarray, IterableDataset))
    if mapped and num_classes is None:
        num_classes = num_classes_of(ds)
    paths = sample_paths(ds) if mapped else None
    scan = _Scan(max_abs, expected_shape, LabelCheck(num_classes), paths, mapped and is_unlabelled(ds))
    if isinstance(data, DataLoader):
        if isinstance(data.dataset, IterableDataset):
            _scan_batches(data, scan, progress)
        else:
            if not isinstance(data.sampler, SequentialSampler):
                log.info(
                    "the DataLoader samples with %s; checking all %d samples of its dataset in index order",
                    type(data.sampler).__name__,
                    len(data.dataset),
                )
            _scan_dataset(data.dataset, scan, num_workers or data.num_workers, progress)
    elif isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(
                f"a tuple is read as (inputs, labels) and must have 2 items, got {len(data)}; "
                f"pass a list for a sequence of samples"
            )
        _scan_arrays(as_tensor(data[0], "inputs"), data[1], scan, progress)
    elif isinstance(data, (torch.Tensor, np.ndarray)):
        _scan_arrays(as_tensor(data, "data"), None, scan, progress)
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        _scan_dataset(data, scan, num_workers, progress)
    else:
        raise TypeError(
            f"validate_dataset takes a Dataset, a tensor or array (N, ...), a tuple (x, y) or a DataLoader, "
            f"got {type(data).__name__}"
        )
    return scan.report()


class _Scan:
    """Collects shapes, dtypes, labels, value problems and statistics; `report` turns them into issues."""

    def __init__(self, max_abs, expected_shape, labels: LabelCheck, paths=None, unlabelled=False):
        self.max_abs, self.expected_shape, self.labels = max_abs, expected_shape, labels
        self.paths = paths  # the file of each dataset index, to name in issues, or None
        self.unlabelled = unlabelled  # the dataset's labels are placeholders (-1): not checked
        self.moments = Moments()
        self.n = 0
        self.order: dict[int | str, int] = {}  # sample name -> position, for sorting string names
        self.shapes: dict[tuple, list[Sequence]] = {}  # shape -> runs of names
        self.dtypes: dict[torch.dtype, list[Sequence]] = {}
        self.issues: list[DataIssue] = []

    def chunk(self, names: Sequence, x: torch.Tensor) -> None:
        """x (B, ...): the inputs of samples `names`, one shape and dtype."""
        if not isinstance(names, range):
            names = tuple(names)  # the caller reuses its list
            for name in names:
                if isinstance(name, str):
                    self.order.setdefault(name, len(self.order))
        self.n += len(names)
        self.shapes.setdefault(tuple(x.shape[1:]), []).append(names)
        self.dtypes.setdefault(x.dtype, []).append(names)
        if x.dtype == torch.bool or x.is_complex():
            return  # no intensities to check; the dtype issue says what to do
        for pos, kind, detail in scan_chunk(x, self.max_abs, self.moments):
            self.issues.append(DataIssue(names[pos], kind, detail))

    def unreadable(self, name, value) -> None:
        self.order.setdefault(name, len(self.order))
        self.n += 1
        self.issues.append(
            DataIssue(name, "dtype", f"input is a {type(value).__name__}, not a tensor or numeric array")
        )

    def failed(self, index: int, failure: ReadFailure) -> None:
        self.n += 1
        self.issues.append(DataIssue(index, "read", f"reading it raised {failure}"))

    def report(self) -> DataReport:
        self._shape_issues()
        self._dtype_issues()
        self.issues += self.labels.issues()
        if self.n == 0:
            detail = "no samples: an empty dataset trains nothing; check the folder, CSV or list it reads"
            self.issues.append(DataIssue(None, "empty", detail))
        if self.paths is not None:
            self.issues = [_with_path(i, self.paths) for i in self.issues]
        rank = {k: i for i, k in enumerate(KINDS)}

        def position(i: DataIssue) -> int:
            if i.index is None:
                return -1
            return i.index if isinstance(i.index, int) else self.order.get(i.index, 0)

        self.issues.sort(key=lambda i: (position(i), rank[i.kind]))
        stats = self.moments.stats()
        stats["shapes"] = {s: sum(map(len, runs)) for s, runs in self.shapes.items()}
        stats["dtypes"] = {str(d).removeprefix("torch."): sum(map(len, r)) for d, r in self.dtypes.items()}
        stats.update(self.labels.stats())
        return DataReport(self.n, self.issues, stats)

    def _shape_issues(self) -> None:
        if not self.shapes:
            return
        counts = {s: sum(map(len, runs)) for s, runs in self.shapes.items()}
        ref = self.expected_shape or max(counts, key=counts.get)  # ties: the first seen
        why = "expected_shape" if self.expected_shape else f"the shape of {counts.get(ref, 0)} other samples"
        for shape, runs in self.shapes.items():
            if shape != ref:
                detail = f"shape {shape}, expected {ref} ({why})"
                self.issues += [DataIssue(name, "shape", detail) for run in runs for name in run]

    def _dtype_issues(self) -> None:
        counts = {d: sum(map(len, r)) for d, r in self.dtypes.items() if d.is_floating_point}
        ref = max(counts, key=counts.get) if counts else torch.float32
        for dtype, runs in self.dtypes.items():
            if not dtype.is_floating_point:
                detail = f"dtype {_name(dtype)} is not floating point; convert inputs to float32 (x.float())"
            elif dtype != ref:
                detail = (
                    f"dtype {_name(dtype)}, while {counts[ref]} samples are {_name(ref)}: batches would mix"
                )
            else:
                continue
            self.issues += [DataIssue(name, "dtype", detail) for run in runs for name in run]


def _with_path(issue: DataIssue, paths: list) -> DataIssue:
    i = issue.index
    if isinstance(i, (int, np.integer)) and 0 <= i < len(paths) and issue.path is None:
        return replace(issue, path=str(paths[i]))
    return issue


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _bar(total: int | None, progress: bool | None):
    show = progress if progress is not None else (total or 0) >= _PROGRESS_MIN
    return tqdm(total=total, unit="sample", desc="validate", disable=not show, leave=False)


def _scan_arrays(x: torch.Tensor, y: Any, scan: _Scan, progress) -> None:
    if x.dim() == 0:
        raise ValueError("inputs must have a sample axis first, (N, ...); got a 0-d value")
    n = x.shape[0]
    if y is not None:
        try:
            y = as_tensor(y, "labels")
        except TypeError:  # class names or mixed objects: reported label by label
            y = list(y)
        length = len(y) if isinstance(y, list) else (y.shape[0] if y.dim() else None)
        if length != n:
            shape = f"length {length}" if isinstance(y, list) else f"shape {tuple(y.shape)}"
            raise ValueError(
                f"inputs and labels must have the same length, got {n} inputs and labels of {shape}"
            )
        if isinstance(y, list):
            for j, label in enumerate(y):
                scan.labels.add(j, label)
        else:
            scan.labels.add_many(range(n), y)
    per = max(1, CHUNK_BYTES // max(1, x[0].numel() * x.element_size())) if n else 1
    with _bar(n, progress) as bar:
        for start in range(0, n, per):
            stop = min(n, start + per)
            scan.chunk(range(start, stop), x[start:stop])
            bar.update(stop - start)


def _scan_dataset(ds, scan: _Scan, workers: int, progress) -> None:
    chunks = Chunker(scan.chunk, CHUNK_BYTES)
    with _bar(len(ds), progress) as bar:
        for i, sample in read_samples(ds, workers):
            bar.update(1)
            if isinstance(sample, ReadFailure):
                scan.failed(i, sample)
                continue
            try:
                x, y, has_label = split_sample(sample)
            except ValueError as e:
                raise ValueError(f"sample {i} of {type(ds).__name__}: {e}") from e
            if has_label and not scan.unlabelled:
                scan.labels.add(i, y)
            t = sample_tensor(x)
            if t is None:
                chunks.flush()
                scan.unreadable(i, x)
            else:
                chunks.add(i, t)
        chunks.flush()


def _scan_batches(loader: DataLoader, scan: _Scan, progress) -> None:
    with _bar(None, progress) as bar:
        for b, batch in enumerate(loader):
            x, y, has_label = split_sample(batch)
            x = sample_tensor(x)
            if x is None or x.dim() == 0:
                raise TypeError(
                    f"batch {b} of the DataLoader is not a tensor batch (B, ...): {type(batch).__name__}"
                )
            names = [f"batch {b} item {j}" for j in range(x.shape[0])]
            scan.chunk(names, x)
            if has_label:
                scan.labels.add_many(names, as_tensor(y, f"labels of batch {b}"))
            bar.update(len(names))
