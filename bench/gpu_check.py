"""The GPU settings, measured where they matter. Run on a GPU: python bench/gpu_check.py [--compile]

On CUDA: ResNet-10-3D (width 1, 64^3, batch 4) training-step time through nbtools' own step
(`train_step`) in fp32, bf16 (where the GPU really has it) and fp16 + GradScaler, each with and
without channels_last_3d, and with torch.compile; then the fp16 failure reproductions
(nbtools.recipes.reproduce: the frozen GradScaler, the forward overflow) and whether nbtools caught
them. Printed as a markdown table for the README.

Without CUDA it runs a reduced CPU pass (a narrow ResNet-10-3D at 16^3: CPU autocast for bf16 and fp16,
a few steps, compile only with --compile as it takes minutes on a small CPU) and says so on its first line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import nbtools as nbt
from nbtools.recipes import reproduce
from nbtools.step import Precision, train_step
from nbtools.train.accel import as_input, compile_unavailable, compiled, set_memory_format
from nbtools.train.optim import build_optimizer


def step_time(device, precision: str, channels_last: bool, compile_: bool, width, size, batch, steps):
    """Median seconds per optimizer step (after two warm-up steps), or a reason it could not run."""
    torch.manual_seed(0)
    model = nbt.models.resnet3d(depth=10, width=width).to(device)
    set_memory_format(model, channels_last)
    opt = build_optimizer(model, nbt.TrainConfig(clip_norm=1.0))
    prec = Precision(precision, device)
    forward = compiled(model, compile_)
    x = as_input(torch.randn(batch, 1, size, size, size, device=device), channels_last)
    y = torch.arange(batch, device=device) % 2
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        r = train_step(forward, [(x, y)], nn.functional.cross_entropy, opt, prec, 1.0)
        float(r.loss)  # wait for the device
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--compile", action="store_true", help="also time torch.compile on a CPU")
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        name = torch.cuda.get_device_name(device)
        cc = torch.cuda.get_device_capability(device)
        print(
            f"GPU {name} (sm {cc[0]}.{cc[1]}), torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
        )
        width, size, batch, steps = 1.0, 64, 4, args.steps or 10
        precisions = ["fp32", "fp16"] + (["bf16"] if cc[0] >= 8 and torch.cuda.is_bf16_supported() else [])
        try_compile = True
    else:
        print(
            f"no CUDA here: reduced CPU pass (ResNet-10-3D width 0.25, 16^3, batch 2), torch {torch.__version__}"
        )
        width, size, batch, steps = 0.25, 16, 2, args.steps or 3
        precisions = ["fp32", "bf16", "fp16"]
        try_compile = args.compile
    why_not = compile_unavailable(device.type) if try_compile else "skipped (pass --compile)"
    print(
        f"\nResNet-10-3D width {width}, {size}^3, batch {batch}: ms per training step (median of {steps})\n"
    )
    print("| precision | contiguous | channels_last_3d | torch.compile |")
    print("|---|---|---|---|")
    base = None
    for precision in precisions:
        cells = []
        for cl, comp in ((False, False), (True, False), (False, True)):
            if comp and why_not:
                cells.append(why_not if why_not.startswith("skipped") else f"cannot compile ({why_not})")
                continue
            t = step_time(device, precision, cl, comp, width, size, batch, steps)
            base = base or t
            cells.append(f"{t * 1e3:.1f} ({base / t:.2f}x the fp32 speed)")
        print(f"| {precision} | " + " | ".join(cells) + " |")
    print("\nfp16 failure reproductions (nbtools.recipes.reproduce), run on this machine:\n")
    print("| reproduction | caught | what nbtools said |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for fn in (reproduce.frozen_fp16, reproduce.fp16_forward_overflow):
            r = fn(Path(tmp) / fn.__name__)
            said = (r.evidence[0].splitlines()[0] if r.evidence else "").replace("|", "/")
            print(f"| {fn.__name__} | {'yes' if r.caught else 'NO'} | {said[:160]} |")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
