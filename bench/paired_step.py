"""fit's step vs a bare step at the ~1 ms step, paired step by step. Run: python bench/paired_step.py [--rounds 4]

On a shared VM the machine's speed drifts by tens of percent over seconds, so timing a bare epoch and
then a fit epoch (bench/overhead.py) compares different machines. Here each of fit's steps is paired
with a bare step run right before it: fit's `batch_transform` runs one bare step (its own DataLoader
fetch, forward, backward, clip_grad_norm_, fused AdamW step, zero_grad) on its own copy of the net,
and fit's step is timed from the end of that bare step to the start of the next one (loading the
next batch, the step, scheduler, telemetry, the guards at an interval's end). Prints per round the
median of the per-step ratios and the ratio of mean step times (interval ends included).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from overhead import config, fit_epoch, in_memory, tiny_net
from torch import nn
from torch.utils.data import DataLoader

from nbtools.train.loader import TrainBatches


class PairedBareStep:
    """A batch_transform that runs and times one bare step before each of fit's steps."""

    def __init__(self, model: nn.Module, data, cfg, epoch: int):
        self.model, self.clip = model, cfg.clip_norm
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        self.loss = nn.CrossEntropyLoss()
        self.batches = iter(
            DataLoader(data, batch_sampler=TrainBatches(len(data), cfg.batch_size, cfg.seed, epoch))
        )
        self.bare: list[float] = []  # bare step k
        self.fit: list[
            float
        ] = []  # fit's step k (from the end of bare step k to the start of bare step k + 1)
        self.end: float | None = None

    def __call__(self, x, y):
        start = time.perf_counter()
        if self.end is not None:
            self.fit.append(start - self.end)
        bx, by = next(self.batches)
        self.loss(self.model(bx), by).backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.end = time.perf_counter()
        self.bare.append(self.end - start)
        return x, y


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    data, val, cfg = in_memory(512, 16, 1), in_memory(8, 16, 2), config(4)
    bare_model = tiny_net()
    print(f"torch {torch.__version__}, 1 thread, CPU; tiny Conv3d net at 16^3, batch {cfg.batch_size}")
    medians = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            paired = PairedBareStep(bare_model, data, cfg, r + 1)
            fit_epoch(tiny_net(), data, val, cfg.replace(seed=r), Path(tmp) / "fit", paired)
            # fit step k follows bare step k; the first pair carries the epoch's start-up
            bare, fit = paired.bare[1 : len(paired.fit)], paired.fit[1:]
            ratios = [f / b for f, b in zip(fit, bare)]
            medians.append(statistics.median(ratios))
            print(
                f"  round {r + 1}: bare {statistics.median(bare) * 1e3:.3f} ms, fit {statistics.median(fit) * 1e3:.3f} ms;"
                f" median per-step fit / bare {medians[-1]:.3f}x, mean step fit / bare "
                f"{statistics.mean(fit) / statistics.mean(bare):.3f}x"
            )
    print(f"median over rounds of the per-step ratio: {statistics.median(medians):.3f}x (target <= 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
