"""Is a step bound by data or by compute? Run: python bench/loader.py [--n 48] [--size 48]

Writes `n` .nii.gz volumes (two class folders, nibabel) to a temp folder and reads them back through
`VolumeFolder` (z-score, crop/pad to size^3) with the cache off and on (warm: built by a first pass),
with 0 and 2 loader workers. For each: samples/s of loading alone (iterating the DataLoader) and of
loading + training a ResNet-10-3D (width 0.25) step on what it loads (forward, backward, clip, fused
AdamW). Training on batches already in memory gives the compute-bound rate. Where loading alone is
not well above the compute rate, the data is the bottleneck: turn the cache on, add workers (on a GPU
runtime; `nbtools.train.loader.loader_kwargs`), or store volumes uncompressed (.npy).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import nbtools as nbt
from nbtools.train.loader import loader_kwargs


def write_volumes(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("lesion" if i % 3 == 0 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        vol = rng.normal(100.0, 20.0, (size + 4,) * 3).astype(np.float32)  # scanner units, cropped on load
        nib.save(nib.Nifti1Image(vol, np.eye(4)), folder / f"vol_{i:03d}.nii.gz")


def loading(loader) -> float:
    t0, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t0)


class Trainer:
    def __init__(self):
        torch.manual_seed(0)
        self.model = nbt.models.resnet3d(depth=10, width=0.25)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, fused=True)

    def step(self, x, y) -> None:
        nn.functional.cross_entropy(self.model(x), y).backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def rate(self, batches) -> float:
        t0, n = time.perf_counter(), 0
        for x, y in batches:
            self.step(x, y)
            n += len(x)
        return n / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(2)
    shape = (args.size,) * 3
    trainer = Trainer()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "volumes"
        write_volumes(root, args.n, args.size)
        in_memory = list(DataLoader(nbt.data.VolumeFolder(root, shape), batch_size=args.batch))
        trainer.rate(in_memory[:2])  # warm-up
        compute = trainer.rate(in_memory)
        print(
            f"{args.n} .nii.gz volumes {args.size + 4}^3 -> {args.size}^3, batch {args.batch}, "
            f"{torch.get_num_threads()} threads; ResNet-10-3D step on in-memory batches: {compute:.1f} samples/s"
        )
        print("\n| cache | workers | loading alone, samples/s | loading + training, samples/s | bound by |")
        print("|---|---|---|---|---|")
        for cache in (False, True):
            ds = nbt.data.VolumeFolder(root, shape, cache_dir=Path(tmp) / "cache" if cache else None)
            if cache:
                loading(DataLoader(ds, batch_size=args.batch))  # builds the cache
            for workers in (0, 2):
                kw = loader_kwargs(workers, "cpu", persistent=False)
                load = loading(DataLoader(ds, batch_size=args.batch, **kw))
                train = trainer.rate(DataLoader(ds, batch_size=args.batch, **kw))
                bound = "data" if load < 2 * compute else "compute"
                print(
                    f"| {'on (warm)' if cache else 'off'} | {workers} | {load:.1f} | {train:.1f} | {bound} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
