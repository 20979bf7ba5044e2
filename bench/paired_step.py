"""fit's step vs a bare step at the ~1 ms step, paired step by step. Run: python bench/paired_step.py [--rounds 4]

The paired part of bench/overhead.py on its own, with each round printed: fit's `batch_transform` runs
one bare step (forward, backward, clip_grad_norm_, fused AdamW step, zero_grad, then the fetch of its
next batch from its own DataLoader) on its own copy of the net, and fit's step is timed from the end of
that bare step to the start of the next one (loading the next batch, the step, scheduler, telemetry,
the guards at an interval's end). Prints per round, by wall clock and by main-thread CPU time, the
median of the per-step ratios and the ratio of mean step times (interval ends included)."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch
from overhead import PairedBareStep, config, fit_epoch, in_memory, ratios, tiny_net


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--samples", type=int, default=1024, help="training samples per round (batch 4)")
    p.add_argument("--log-every", type=int, default=10, help="TrainConfig.log_every (its default: 10)")
    args = p.parse_args()
    torch.set_num_threads(1)
    data, val = in_memory(args.samples, 16, 1), in_memory(8, 16, 2)
    cfg = config(4).replace(log_every=args.log_every)
    bare_model = tiny_net()
    print(
        f"torch {torch.__version__}, 1 thread, CPU; tiny Conv3d net at 16^3, batch {cfg.batch_size}, "
        f"{args.samples // cfg.batch_size} steps a round, log_every {cfg.log_every}; load average {os.getloadavg()[0]:.2f}"
    )
    summary = {"wall": ([], []), "cpu": ([], [])}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            paired = PairedBareStep(bare_model, data, cfg, r + 1)
            fit_epoch(tiny_net(), data, val, cfg.replace(seed=r), Path(tmp) / "fit", paired)
            parts = []
            for clock, name in enumerate(summary):
                bare, fit, per_step, mean = ratios(paired, clock)
                summary[name][0].append(per_step)
                summary[name][1].append(mean)
                parts.append(
                    f"{name}: bare {bare * 1e3:.3f} ms, fit {fit * 1e3:.3f} ms, per step {per_step:.3f}x, "
                    f"mean {mean:.3f}x"
                )
            print(f"  round {r + 1}: " + "; ".join(parts))
    for name, (per_step, mean) in summary.items():
        print(
            f"{name} time, median over rounds: per-step ratio {statistics.median(per_step):.3f}x, "
            f"mean-step ratio (interval ends included) {statistics.median(mean):.3f}x (target <= 1.05)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
