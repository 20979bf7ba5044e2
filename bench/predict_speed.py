"""How long does nbt.predict take on a folder of NIfTI volumes? Run: python bench/predict_speed.py [--n 64] [--side 32]

Trains the resnet3d recipe (ResNet-10-3D, width 0.25) for one short epoch on its embedded set at
side^3, writes --n NIfTI files (nibabel, with an affine) of side^3 into an unlabelled folder, and times
`nbt.predict` on them plain and with tta=True (8 flip combinations), round after round so machine noise
hits both alike. Prints volumes/s (median over rounds) of each, the TTA cost ratio, and the load average.
The per-batch sample checks (nbtools.data.checked) are timed against the same read loop without them
(5 alternated reads per round).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import nbtools as nbt
from nbtools.data.checked import CheckedSamples, collate_checked
from nbtools.train.loader import EvalBatches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import nibabel as nib

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        job = nbt.recipes.make_job(
            "resnet3d", n_train=8, n_val=8, size=args.side, epochs=1, checkpoint_every_minutes=None
        )
        job.fit(tmp / "run", verbose=False, dashboard=None, device="cpu")
        rng = np.random.default_rng(0)
        (tmp / "new").mkdir()
        for i in range(args.n):
            vol = rng.normal(size=(args.side,) * 3).astype(np.float32)
            nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.0, 1.0])).to_filename(
                str(tmp / "new" / f"scan_{i:03d}.nii.gz")
            )
        times: dict[str, list[float]] = {"plain": [], "tta": [], "read": [], "read_checked": []}
        ds = nbt.data.VolumeFolder(tmp / "new", shape=(args.side,) * 3, labels="auto")
        for _ in range(args.rounds):
            for name, tta in (("plain", False), ("tta", True)):
                t = time.perf_counter()
                preds = nbt.predict(tmp / "run", tmp / "new", tta=tta, device="cpu")
                times[name].append(time.perf_counter() - t)
                assert len(preds) == args.n
            for _ in range(5):  # reading is short: more rounds, alternated
                for name, data, collate in (
                    ("read", ds, None),
                    ("read_checked", CheckedSamples(ds, need_labels=False), collate_checked),
                ):
                    t = time.perf_counter()
                    for _batch in DataLoader(data, batch_sampler=EvalBatches(len(ds), 8), collate_fn=collate):
                        pass
                    times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"load average {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}")
    print(
        f"predict, {args.n} volumes of {args.side}^3: plain {args.n / med['plain']:.1f} volumes/s, "
        f"tta {args.n / med['tta']:.1f} volumes/s ({med['tta'] / med['plain']:.1f}x the time)"
    )
    print(
        f"reading them in batches of 8: {med['read']:.3f} s bare, {med['read_checked']:.3f} s checked "
        f"({med['read_checked'] / med['read']:.3f}x)"
    )


if __name__ == "__main__":
    main()
