"""How fast is nbt.data.Augment3D? Run: python bench/augment3d_speed.py [--batch 8] [--side 64] [--rounds 5]

Same random affine (flip D and W, rotation ±11.5° about each axis, zoom ±8 %, translation ±8 %),
trilinear (order=1), edge padding, on a batch of float32 volumes (batch, 1, side, side, side):
  * Augment3D with every spatial op on (p=1), one grid_sample for the batch;
  * per-sample scipy.ndimage.affine_transform(order=1, mode="nearest"), the usual CPU pipeline;
  * Augment3D with every op on, gamma, scale and shift included;
  * Augment3D() with its default probabilities, as fit would run it (some samples only flipped).
Rounds alternate in one process so machine noise hits all alike. Prints volumes/s (median over
rounds) and the ratio Augment3D (spatial) / scipy, as a median of per-round ratios.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import torch
from scipy import ndimage

import nbtools as nbt


def random_affine(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A scipy (matrix, offset) for output voxel -> input voxel, drawn like Augment3D's spatial ops."""
    a = rng.uniform(-1, 1, 3) * math.radians(11.5)
    (cx, cy, cz), (sx, sy, sz) = np.cos(a), np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = np.diag([-1.0, 1.0, -1.0]) @ rz @ ry @ rx / rng.uniform(0.92, 1.08)
    centre = (np.array(shape) - 1) / 2
    shift = rng.uniform(-0.08, 0.08, 3) * np.array(shape)
    return m, centre - m @ centre + shift


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (args.side,) * 3
    x = torch.randn(args.batch, 1, *shape)
    volumes = [v[0].numpy() for v in x]
    rng = np.random.default_rng(0)
    spatial = nbt.data.Augment3D(1, 1, 1, 1, 0, 0, 0, flip_axes=(0, 2))
    every = nbt.data.Augment3D(1, 1, 1, 1, 1, 1, 1, flip_axes=(0, 2))
    defaults = nbt.data.Augment3D()

    def scipy_batch() -> None:
        for v in volumes:
            m, offset = random_affine(rng, shape)
            ndimage.affine_transform(v, m, offset=offset, order=1, mode="nearest")

    runs = {
        "Augment3D spatial (batch)": lambda: spatial(x, None),
        "scipy affine_transform (per sample)": scipy_batch,
        "Augment3D every op (batch)": lambda: every(x, None),
        "Augment3D defaults (batch)": lambda: defaults(x, None),
    }
    for run in runs.values():
        run()  # warm-up: first calls allocate
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"batch {args.batch} x 1x{args.side}^3 float32, {torch.get_num_threads()} torch threads (scipy: 1), "
        f"load average {load}"
    )
    for name, t in times.items():
        print(f"{name:36s} {args.batch / statistics.median(t):8.1f} volumes/s")
    ratios = [
        s / a
        for a, s in zip(times["Augment3D spatial (batch)"], times["scipy affine_transform (per sample)"])
    ]
    print(f"Augment3D spatial / scipy: {statistics.median(ratios):.1f}x (median of per-round ratios)")


if __name__ == "__main__":
    main()
