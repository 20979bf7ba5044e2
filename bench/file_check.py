"""How long does reading every file before training take? Run: python bench/file_check.py [--n 60] [--side 64]

Writes --n NIfTI volumes (nibabel, float32, scanner-like noise, gzipped) of side^3 in two class folders
and times `nbt.data.check_files` on them, round after round so machine noise hits every variant alike:
cold (no record: every file read, gzip to its end, decoded, checked for NaN/Inf) with 1, 2, 4 and 8
threads; cached (every file passed before, unchanged: only a stat each); and the run's key (a resume:
a stat each, no record opened). For scale, one serial pass of `dataset[i]` over the folder: what one
epoch of training pays to read the files. Prints the median seconds of each and the load average (the
machine is shared: compare within a round, not with another day's figures) and the CPU seconds, which
machine load does not inflate as much: more threads than free cores shorten nothing. --latency-ms
makes every read wait that long first (a Drive mount's round trip), where threads overlap the waits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import nbtools as nbt
from nbtools.data import check_files


def _write(root: Path, n: int, side: int) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("neg" if i % 2 else "pos")
        folder.mkdir(parents=True, exist_ok=True)
        vol = rng.normal(100.0, 20.0, size=(side,) * 3).astype(np.float32)
        nib.Nifti1Image(vol, np.diag([1.5, 1.5, 2.0, 1.0])).to_filename(str(folder / f"case_{i:03d}.nii.gz"))


class _Remote:
    """A folder whose every read waits `latency` seconds first, as a read from a network mount (a Google
    Drive in Colab) waits on the network: a stand-in, since no Drive is mounted here."""

    def __init__(self, ds, latency: float) -> None:
        self.ds, self.latency = ds, latency
        self.root, self.paths, self.config = ds.root, ds.paths, ds.config

    def __getitem__(self, i):
        time.sleep(self.latency)
        return self.ds[i]


def _timed(fn, *args, **kwargs) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of fn(*args, **kwargs)."""
    t, c = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="wait per file read (a network mount)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _write(tmp / "vols", args.n, args.side)
        ds = nbt.data.VolumeFolder(tmp / "vols", shape=(args.side,) * 3)
        if args.latency_ms:
            ds = _Remote(ds, args.latency_ms / 1000)
        mb = sum(p.stat().st_size for p in ds.paths) / 1e6
        print(
            f"{args.n} files of {args.side}^3 float32, {mb:.1f} MB gzipped, {args.latency_ms:g} ms latency per "
            f"read, load average {os.getloadavg()}"
        )
        times: dict[str, list[tuple[float, float]]] = {}
        workers = [int(w) for w in args.workers.split(",")]
        for r in range(args.rounds):
            times.setdefault("one epoch's reads (serial ds[i])", []).append(
                _timed(lambda: [ds[i] for i in range(len(ds.paths))])
            )
            for w in workers:
                cache = tmp / f"cache-{r}-{w}"  # a fresh record: every file is read
                times.setdefault(f"cold, {w} threads", []).append(
                    _timed(check_files, [ds], workers=w, progress=False, cache_dir=cache)
                )
            check = check_files([ds], progress=False, cache_dir=cache)
            assert check.n_read == 0
            times.setdefault("cached (record on this machine)", []).append(
                _timed(check_files, [ds], progress=False, cache_dir=cache)
            )
            times.setdefault("the run's key (resume)", []).append(
                _timed(check_files, [ds], known_key=check.key, progress=False)
            )
        for name, ts in times.items():
            wall, cpu = statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)
            rounds = ", ".join(f"{t[0]:.3f}" for t in ts)
            print(f"{name:36s} {wall:7.3f} s wall, {cpu:7.3f} s CPU  (wall per round: {rounds})")
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
