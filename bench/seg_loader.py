"""Is a segmentation step bound by patch loading or by compute? Run: python bench/seg_loader.py [--n 16]
[--size 96] [--patch 64] [--batch 2]

Writes `n` image/mask pairs as .nii.gz (nibabel, int16 scanner units and uint8 masks, as
write_segmentation_folder writes them) and reads random patches of them through `SegmentationFolder`
(z-score per case, a third of the patches centred on foreground), with the cache off and on (warm: built by
a first pass) and 0 and 2 loader workers. For each: patches/s of loading alone (iterating the DataLoader),
and of loading + a training step of the unet3d recipe's model (ResNet-10 encoder, width 0.25, deep
supervision 3; Dice + CE under nnU-Net's weights; forward, backward, clip, fused AdamW) on what it loads.
Training on patches already in memory gives the compute-bound rate. Without the cache every patch
decompresses its whole case (a .nii.gz cannot be read in part), so loading a 64^3 patch costs a 96^3
case; where loading is not well above the compute rate, turn the cache on or add workers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import nbtools as nbt
from nbtools.train.loader import loader_kwargs


def loading(loader) -> float:
    t0, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t0)


class Trainer:
    def __init__(self, num_classes: int):
        torch.manual_seed(0)
        self.model = nbt.models.unet3d(10, 1, num_classes, width=0.25, deep_supervision=3, verbose=False)
        self.loss = nbt.losses.DeepSupervisionLoss(nbt.losses.DiceCELoss(), weights="nnunet")
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, fused=True)

    def step(self, x, y) -> None:
        self.loss(self.model(x), y).backward()
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
    p.add_argument("--n", type=int, default=16, help="cases")
    p.add_argument("--size", type=int, default=96, help="each case is size^3")
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(2)
    patch = (args.patch,) * 3
    trainer = Trainer(num_classes=3)
    with tempfile.TemporaryDirectory() as tmp:
        cases = nbt.data.SyntheticSegVolumes(args.n, shape=(args.size,) * 3, num_classes=3, seed=0)
        root = nbt.data.write_segmentation_folder(cases, Path(tmp) / "seg")
        mb = sum(f.stat().st_size for f in root.rglob("*.nii.gz")) / 2**20
        in_memory = list(DataLoader(nbt.data.SegmentationFolder(root, patch), batch_size=args.batch))
        trainer.rate(in_memory[:1])  # warm-up
        compute = trainer.rate(in_memory)
        print(
            f"{args.n} .nii.gz cases {args.size}^3 ({mb:.1f} MB) -> patches {args.patch}^3, batch {args.batch}, "
            f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; unet3d step on "
            f"in-memory patches: {compute:.2f} patches/s"
        )
        print("\n| cache | workers | loading alone, patches/s | loading + training, patches/s | bound by |")
        print("|---|---|---|---|---|")
        for cache in (False, True):
            ds = nbt.data.SegmentationFolder(root, patch, cache_dir=Path(tmp) / "cache" if cache else None)
            if cache:
                loading(DataLoader(ds, batch_size=args.batch))  # builds the cache
            for workers in (0, 2):
                kw = loader_kwargs(workers, "cpu", persistent=False)
                load = loading(DataLoader(ds, batch_size=args.batch, shuffle=True, **kw))
                train = trainer.rate(DataLoader(ds, batch_size=args.batch, shuffle=True, **kw))
                bound = "data" if load < 2 * compute else "compute"
                print(
                    f"| {'on (warm)' if cache else 'off'} | {workers} | {load:.1f} | {train:.2f} | {bound} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
