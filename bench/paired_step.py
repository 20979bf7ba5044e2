"""fit's step vs a bare step at the ~1 ms step, paired step by step. Run: python bench/paired_step.py [--rounds 4]

The paired part of bench/overhead.py on its own, with each round printed: fit's `batch_transform` runs
one bare step (forward, backward, clip_grad_norm_, fused AdamW step, zero_grad, then the fetch of its
next batch from its own DataLoader) on its own copy of the net, and fit's step is timed from the end of
that bare step to the start of the next one (loading the next batch, the step, scheduler, telemetry,
the guards at an interval's end). Prints each round's ratios (main-thread CPU time) on stderr, then,
by wall clock and by CPU time, the medians over the rounds of the per-step ratio and of the
mean-step ratio (interval ends included)."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from overhead import config, in_memory, paired, tiny_net


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--samples", type=int, default=1024, help="training samples per round (batch 4)")
    p.add_argument("--log-every", type=int, default=10, help="TrainConfig.log_every (its default: 10)")
    args = p.parse_args()
    data, val = in_memory(args.samples, 16, 1), in_memory(8, 16, 2)
    cfg = config(4).replace(log_every=args.log_every)
    print(f"torch {torch.__version__}, CPU; log_every {cfg.log_every}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        paired("1 ms step (tiny Conv3d net, 16^3)", tiny_net, data, val, cfg, args.rounds, Path(tmp), 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
