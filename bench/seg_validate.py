"""Does host memory stay flat as a segmentation validation set grows?
Run: python bench/seg_validate.py [--cases 6] [--side 64] [--classes 3] [--width 0.125]

One model (unet3d, width --width), validation sets of --cases and 4x --cases volumes (1, side^3), made
on the fly from their index (the data set itself holds nothing), each pass run two ways:
  * ours:  nbtools.tasks.evaluate_segmentation: tp/fp/fn per case on the device, one host read;
  * naive: what a classification validation does (nbtools.train.evaluate.predict): keep every batch's
           logits and masks on the host, then score them all at the end.
Each (way, size) runs in a fresh process of its own, and the peak resident memory (ru_maxrss) of that
process is what is compared: within one process the allocator keeps and reuses what an earlier pass
freed, which hides growth. Prints the peaks, the growth from 1x to 4x, the time per case and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset

import nbtools as nbt
from nbtools.losses import DeepSupervisionLoss, DiceCELoss, main_output
from nbtools.tasks import DiceAccumulator, evaluate_segmentation


class Volumes(Dataset):
    """Case i: noise (1, side^3) and a mask of `classes` nested cubes, made from i each time it is read."""

    def __init__(self, n: int, side: int, classes: int):
        self.n, self.side, self.classes = n, side, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(1, self.side, self.side, self.side, generator=g)
        y = torch.zeros(self.side, self.side, self.side, dtype=torch.long)
        for c in range(1, self.classes):
            lo = c * self.side // (2 * self.classes) + int(torch.randint(0, 3, (), generator=g))
            y[lo : self.side - lo, lo : self.side - lo, lo : self.side - lo] = c
        return x, y


def naive(model, batches, classes, loss_fn):
    model.eval()
    logits, masks, loss_sum = [], [], torch.zeros(())
    with torch.no_grad():
        for x, y in batches:
            z = main_output(model(x)).float()
            loss_sum += loss_fn(z, y) * len(y)
            logits.append(z.cpu())
            masks.append(y.cpu())
    acc = DiceAccumulator(classes)
    acc.update(torch.cat(logits), torch.cat(masks))
    return acc.compute() | {"val_loss": float(loss_sum) / len(acc.counts())}


def one_pass(args) -> dict:
    """The child process: one validation pass of `args.way` over `args.n` cases."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nbt.models.unet3d(depth=10, width=args.width, num_classes=args.classes, deep_supervision=3)
    loss_fn = DeepSupervisionLoss(DiceCELoss(), weights="nnunet")
    # warm-up: the first forward's one-time allocations (kernels, caches) are the same for every size
    evaluate_segmentation(
        model, DataLoader(Volumes(2, args.side, args.classes), batch_size=args.batch), args.classes, "cpu"
    )
    loader = DataLoader(Volumes(args.n, args.side, args.classes), batch_size=args.batch)
    t = time.perf_counter()
    if args.way == "ours":
        metrics, _ = evaluate_segmentation(model, loader, args.classes, "cpu", loss_fn=loss_fn)
    else:
        metrics = naive(model, loader, args.classes, loss_fn)
    return {"seconds_per_case": (time.perf_counter() - t) / args.n, "val_dice": metrics["val_dice"]}


def run_child(argv: list[str]) -> tuple[dict, float]:
    """(the child's JSON result, its peak RSS in MB)."""
    proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child {argv} failed with exit status {status}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024  # KB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--way", choices=("ours", "naive"), help=argparse.SUPPRESS)  # a child's pass
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        print(json.dumps(one_pass(args)))
        return
    load_before = os.getloadavg()
    common = ["--side", str(args.side), "--classes", str(args.classes), "--width", str(args.width)]
    common += ["--batch", str(args.batch), "--threads", str(args.threads)]
    results = {}
    for way in ("ours", "naive"):
        for scale in (1, 4):
            results[way, scale] = run_child([*common, "--way", way, "--n", str(args.cases * scale)])

    per_case = args.classes * args.side**3 * 4 + args.side**3 * 8  # float32 logits + int64 mask
    print(
        f"unet3d depth 10 width {args.width}, {args.classes} classes, volumes 1x{args.side}^3, batch {args.batch}; "
        f"the logits and mask of one case take {per_case / 1e6:.1f} MB"
    )
    for way in ("ours", "naive"):
        (r1, peak1), (r4, peak4) = results[way, 1], results[way, 4]
        print(
            f"  {way:6s} peak RSS: {args.cases:3d} cases {peak1:7.1f} MB, {4 * args.cases:3d} cases {peak4:7.1f} MB "
            f"({peak4 - peak1:+.1f} MB); {r1['seconds_per_case']:.2f} / {r4['seconds_per_case']:.2f} s a case; "
            f"val_dice {r1['val_dice']:.4f} / {r4['val_dice']:.4f}"
        )
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.1f} / after {load_after[0]:.1f} (1 min), {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
