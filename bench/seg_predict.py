"""Does our sliding-window predict cost what MONAI's sliding_window_inference alone costs?
Run: python bench/seg_predict.py [--side 96] [--patch 64] [--overlap 0.5] [--rounds 7] [--width 0.125]

One process, one model (unet3d, eval mode), one volume (1, 1, side^3), one patch and overlap. Round after
round, alternated so machine noise hits all alike, it times:
  * monai:  sliding_window_inference(x, patch, 1, model, overlap, mode="gaussian") under no_grad, logits;
  * ours:   nbtools.tasks.sliding_window_predict with output="logits" (the same work), "probs" (plus the
            softmax of the whole volume) and "mask" (plus the argmax);
  * ours tta (with --tta): flips along D, H, W (8 passes), for scale.
Prints, per variant, the median over rounds of its time divided by monai's in the same round (wall
time, and this process's CPU time, which another process's load disturbs less), the median times, the
aten ops each call dispatches (bench/opcount.py: exact, the measure noise cannot move), and the
load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from monai.inferers import sliding_window_inference
from opcount import OpCounter

import nbtools as nbt
from nbtools.tasks import sliding_window_predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=96)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    torch.manual_seed(0)
    model = nbt.models.unet3d(depth=args.depth, width=args.width, num_classes=3, deep_supervision=3).eval()
    x = torch.randn(1, 1, args.side, args.side, args.side, generator=torch.Generator().manual_seed(1))
    patch = (args.patch,) * 3

    def monai() -> torch.Tensor:
        with torch.no_grad():
            return sliding_window_inference(x, patch, 1, model, overlap=args.overlap, mode="gaussian")

    runs = {
        "monai sliding_window_inference": monai,
        "ours logits": lambda: sliding_window_predict(model, x, patch, args.overlap, output="logits"),
        "ours probs": lambda: sliding_window_predict(model, x, patch, args.overlap, output="probs"),
        "ours mask": lambda: sliding_window_predict(model, x, patch, args.overlap, output="mask"),
    }
    if args.tta:
        runs["ours probs, tta D/H/W"] = lambda: sliding_window_predict(
            model, x, patch, args.overlap, flip_axes=(0, 1, 2), output="probs"
        )
    monai()  # warm-up: MONAI's lazy imports, allocator
    torch.testing.assert_close(
        runs["ours logits"](), monai()
    )  # the same numbers, or the timing means nothing
    ops = {}
    for name, run in runs.items():
        with OpCounter() as counter:
            run()
        ops[name] = counter.total
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            t, c = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)

    ref = "monai sliding_window_inference"
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    paired = {k: statistics.median(a / b for a, b in zip(v, wall[ref])) for k, v in wall.items()}
    paired_cpu = {k: statistics.median(a / b for a, b in zip(v, cpu[ref])) for k, v in cpu.items()}
    steps = max(1, round(args.patch * (1 - args.overlap)))
    per_dim = -(-max(args.side - args.patch, 0) // steps) + 1
    print(
        f"unet3d depth {args.depth} width {args.width}, volume {args.side}^3, patch {args.patch}^3, overlap "
        f"{args.overlap} ({per_dim**3} windows), {torch.get_num_threads()} threads, {args.rounds} rounds"
    )
    print(f"  {'':32s} {'wall':>8s} {'ratio':>7s} {'cpu':>8s} {'ratio':>7s} {'aten ops':>9s} {'ratio':>7s}")
    for name in runs:
        print(
            f"  {name:32s} {med[name]:7.2f}s {paired[name]:6.3f}x {med_cpu[name]:7.2f}s {paired_cpu[name]:6.3f}x "
            f"{ops[name]:9d} {ops[name] / ops[ref]:6.3f}x"
        )
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.1f} / after {load_after[0]:.1f} (1 min), {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
