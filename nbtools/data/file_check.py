"""Every file of a folder dataset read once, before training, so a bad file is named in seconds, with
all the others, instead of stopping epoch 1 at the batch that holds it.

Each file is decoded as training decodes it (`dataset[i]`: nibabel / numpy for volumes, PIL for
images, the same normalising and cropping; a .nii.gz is checked against its gzip CRC, see
data.volumes), and the decoded values must be finite. Files are read by a thread pool: zlib, PIL and
numpy release the GIL. Files that passed are remembered (see file_record), so a resume or a rerun on
the same files does not read them again, and a fix-and-rerun reads only the files that changed.
"""

from __future__ import annotations

import gzip
import logging
import os
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nbtools.data.checked import SampleError
from nbtools.data.file_record import PassedFiles, Stamp, reader_of, set_key, stamp

log = logging.getLogger(__name__)

# Threads reading files at once: up to MAX_WORKERS, fewer for big files. Decoding is CPU work that
# releases the GIL and reading from a Drive mount waits on the network: more threads than cores help the
# second and cost the first little. But each read holds its decoded copies at once: a 200x256x256 int16
# CT, 14 MB gzipped, peaks at 330 MB in load_volume (23x; a volume with more background compresses
# better), so the threads share MEMORY_BUDGET at 64x the largest file's size.
MAX_WORKERS = 8
MEMORY_BUDGET = 2 << 30
PEAK_PER_FILE_BYTE = 64


class BadFilesError(SampleError):
    """Files of the user's data that cannot be trained on, found before the first step. The message
    names every one (path: what is wrong) and the fix; `.problems` lists them as (path, what)."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class FileCheck:
    """What `check_files` did: `key` (the run records it; see set_key), files in all, files read now
    (the others passed before unchanged), seconds, threads, and `known`: the run's key matched."""

    key: str
    n_files: int
    n_read: int
    seconds: float
    workers: int
    known: bool = False

    def __str__(self) -> str:
        if self.known:
            return (
                f"files: the {self.n_files} files are those the run's check read, at the same sizes and "
                f"modification times: not read again"
            )
        if self.n_read == 0:
            return f"files: all {self.n_files} passed the file check before, unchanged: not read again"
        before = self.n_files - self.n_read
        skipped = f"; {before} passed before, unchanged" if before else ""
        return (
            f"files: read {self.n_read} of {self.n_files} before training ({self.seconds:.1f} s, "
            f"{self.workers} threads{skipped}): every one decodes to finite values"
        )


def check_files(
    datasets: Sequence[Any],
    *,
    known_key: str | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    cache_dir: str | Path | None = None,
) -> FileCheck:
    """Read every file of `datasets` (VolumeFolder, ImageFolder: `.root`, `.paths` and (x, y) items;
    None entries are skipped) and raise BadFilesError naming every bad one; return a FileCheck.

    known_key: the key a run recorded; when the files still match it, nothing is read. Otherwise
    files that passed before with the same size, mtime and ctime (in `cache_dir`, default
    cache_home()/data-checks) are not read again. workers: threads (default: MAX_WORKERS, fewer for
    big files, see MEMORY_BUDGET); progress: a tqdm bar (None: in the main process of a torchrun
    launch only).

    >>> check = check_files([VolumeFolder("vols", shape=(64, 64, 64))])   # doctest: +SKIP
    >>> print(check)                                                       # doctest: +SKIP
    files: read 60 of 60 before training (1.1 s, 8 threads): every one decodes to finite values
    """
    t0 = time.perf_counter()
    sets = [ds for ds in datasets if ds is not None]
    with ThreadPoolExecutor(MAX_WORKERS) as pool:  # a stat on a Drive mount waits on the network too
        stamps = [list(pool.map(stamp, ds.paths)) for ds in sets]
    key = set_key([(reader_of(ds), Path(ds.root), ds.paths, st) for ds, st in zip(sets, stamps)])
    n_files = sum(len(st) for st in stamps)
    largest = max((s.size for st in stamps for s in st if s is not None), default=0)
    workers = max(1, int(workers or min(MAX_WORKERS, MEMORY_BUDGET // max(1, PEAK_PER_FILE_BYTE * largest))))
    if known_key is not None and key == known_key and all(s for st in stamps for s in st):
        return FileCheck(key, n_files, 0, time.perf_counter() - t0, workers, known=True)
    records = [PassedFiles(ds.root, reader_of(ds), cache_dir) for ds in sets]
    todo = [
        (ds, rec, i, Path(p), s)
        for ds, rec, st in zip(sets, records, stamps)
        for i, (p, s) in enumerate(zip(ds.paths, st))
        if not rec.passed(Path(p), s)
    ]
    if progress is None:
        progress = int(os.environ.get("RANK", "0")) == 0
    problems = _read(todo, workers, progress)
    if todo:
        for rec in records:
            rec.save()  # the good files need not be read again after the bad ones are fixed
    seconds = time.perf_counter() - t0
    log.info("file check: %d of %d files read in %.2f s, %d threads", len(todo), n_files, seconds, workers)
    if problems:
        raise BadFilesError(_message(sorted(problems), n_files), sorted(problems))
    return FileCheck(key, n_files, len(todo), seconds, workers)


def _read(todo: list, workers: int, progress: bool) -> list[tuple[str, str]]:
    """Probe each (dataset, record, index, path, stamp) in `workers` threads; add the files that passed
    to their record; return (path, what is wrong) of the others."""
    problems: list[tuple[str, str]] = []
    pool = ThreadPoolExecutor(workers)
    try:
        futures = {pool.submit(_probe, ds, i, path, s): (rec, path, s) for ds, rec, i, path, s in todo}
        with tqdm(
            total=len(todo), desc="reading files", unit="file", disable=not progress or not todo
        ) as bar:
            for future in as_completed(futures):
                rec, path, before = futures[future]
                what, after = future.result()
                if what is not None:
                    problems.append((str(path), what))
                elif after == before:  # not rewritten while it was read
                    rec.add(path, before)
                bar.update()
    finally:  # the stop button: drop the files not started instead of reading them all first
        pool.shutdown(wait=True, cancel_futures=True)
    return problems


def _probe(ds: Any, index: int, path: Path, before: Stamp | None) -> tuple[str | None, Stamp | None]:
    """(what is wrong with the file, None when nothing; its stamp after reading)."""
    if before is None:
        return "cannot be opened (it is gone, or not readable)", None
    if before.size == 0:
        return "empty file (0 bytes)", before
    try:
        x = ds[index][0]
    except (OSError, ValueError) as e:  # the folder datasets' VolumeReadError / ImageReadError, no foreground
        return _what(e, path), before
    what = _nonfinite(x)
    return what, (stamp(path) if what is None else before)


def _what(e: Exception, path: Path) -> str:
    """The decoder's complaint in a line; our readers wrap it (VolumeReadError from ...)."""
    cause = e.__cause__ if isinstance(e.__cause__, Exception) else None
    if cause is None:
        text = str(e)
        for prefix in (f"{path}: ", f"{path} "):
            text = text.removeprefix(prefix)
        return text
    name = type(cause).__name__
    if isinstance(cause, EOFError):
        return f"truncated: the data ends early (the file was cut short; {name}: {cause})"
    if isinstance(cause, gzip.BadGzipFile) and "not a gzipped file" in str(cause).lower():
        return "not gzip data, though its name ends in .gz"
    if isinstance(cause, (gzip.BadGzipFile, zlib.error)):
        return f"damaged: its gzip data does not decompress intact ({name}: {cause})"
    if name == "UnidentifiedImageError":
        return "not an image PIL can decode (PNG/JPEG)"
    if name in ("ImageFileError", "HeaderDataError", "WrapStructError"):
        return f"not a NIfTI image nibabel can read ({name}: {cause})"
    return f"{name}: {cause}"


def _nonfinite(x: Any) -> str | None:
    # numpy, not torch: torch's elementwise ops in a thread pool contend for the intra-op threads (70 ms
    # against numpy's 0.03 ms for a 64^3 volume on a busy 2-core machine)
    a = np.asarray(x)
    if a.dtype.kind != "f":
        return None
    finite = np.isfinite(a)
    if finite.all():
        return None
    nan = int(np.isnan(a).sum())
    inf = a.size - int(finite.sum()) - nan
    return f"{nan} NaN and {inf} Inf of {a.size} values after decoding"


def _message(problems: list[tuple[str, str]], n_files: int) -> str:
    n, listed = len(problems), "\n  ".join(f"{path}: {what}" for path, what in problems)
    it, its = ("it", "its row") if n == 1 else ("them", "their rows")
    fixes = [
        f"export {it} again from the source (a copy cut short by a disconnect is truncated: copy it again), "
        f"or remove {it} from the folder (or {its} from the CSV)"
    ]
    if any(" NaN and " in what for _, what in problems):
        fixes.append(
            "NaN/Inf values make every step that holds the file non-finite: replace them (e.g. with the "
            "background value) when exporting"
        )
    return (
        f"{n} of {n_files} files cannot be trained on (every file is read before the first step; nothing "
        f"was written to the run folder):\n  {listed}\nTo fix: {'; '.join(fixes)}. Then run again: the files "
        f"that passed are not read again."
    )
