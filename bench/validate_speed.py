"""How fast is nbt.validate_dataset? Run: python bench/validate_speed.py [--gb 1.0] [--side 64] [--rounds 3]

Builds --gb of in-memory float32 volumes (N, 1, side, side, side), z-scored noise, and times in one
process, alternating round by round so machine noise hits all alike:
  * validate_dataset on the tensor, and on a map-style Dataset over the same tensor;
  * the seed-004 loop over a DataLoader (batch 8) on that Dataset: isnan/isinf/min/max per batch,
    which stops at the first bad batch and names nothing (the data is clean, so it reads everything).
Prints GB/s (median over rounds) of each and the ratio of validate_dataset (Dataset) to the loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset

import nbtools as nbt


class TensorVolumes(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def seed_004_loop(loader: DataLoader) -> bool:
    """The user's check from seeds/004, verbatim but for the prints."""
    for imgs, _labels in loader:
        if torch.isnan(imgs).any() or torch.isinf(imgs).any():
            return False
        if imgs.min() < -10 or imgs.max() > 10:
            return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=1.0, help="size of the in-memory data set")
    p.add_argument("--side", type=int, default=64, help="volumes are (1, side, side, side)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    per = 4 * args.side**3
    n = max(1, int(args.gb * 1e9 // per))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, args.side, args.side, args.side, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    ds = TensorVolumes(x, y)
    loader = DataLoader(ds, batch_size=8)
    gb = x.numel() * 4 / 1e9
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"{n} volumes 1x{args.side}^3 float32 = {gb:.2f} GB, {torch.get_num_threads()} threads, load average {load}"
    )

    runs = {
        "validate_dataset(tensor)": lambda: nbt.validate_dataset((x, y), num_classes=2, progress=False).ok,
        "validate_dataset(Dataset)": lambda: nbt.validate_dataset(ds, num_classes=2, progress=False).ok,
        "seed-004 loop (DataLoader)": lambda: seed_004_loop(loader),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            ok = run()
            times[name].append(time.perf_counter() - t0)
            assert ok, f"{name} found a problem in clean data"
    speed = {k: gb / statistics.median(v) for k, v in times.items()}
    for name, s in speed.items():
        print(f"{name:28s} {s:6.2f} GB/s  (median of {args.rounds}; best {gb / min(times[name]):.2f})")
    ratio = speed["validate_dataset(Dataset)"] / speed["seed-004 loop (DataLoader)"]
    print(f"validate_dataset(Dataset) / seed-004 loop: {ratio:.2f}x")


if __name__ == "__main__":
    main()
