"""What does nbt.fit cost over a bare PyTorch loop? Run: python bench/overhead.py [--rounds 5]

Same model, data, optimizer and batch order. Each round trains one epoch with a bare loop (forward,
backward, clip, step), one with `fit` (every guard and all telemetry on, EMA off) and one with `fit`
and EMA on, alternating in one process so machine noise hits all three alike. Step time = the time
between the starts of consecutive training steps of an epoch (the first step of each epoch, which
also carries start-up, validation and checkpoint writing, is dropped). Prints the ratio of median
step times, and the host syncs (Tensor.item / __bool__ / __float__ / __int__ / tolist / cpu calls)
per optimizer step inside fit's step loop and over the whole of fit.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import nbtools as nbt
from nbtools.recipes import resnet3d_job
from nbtools.train.loader import TrainBatches

SYNC_METHODS = ("item", "__bool__", "__float__", "__int__", "tolist", "cpu")


class SyncCounter:
    """Counts Python-level calls of the Tensor methods that wait for the device."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.saved = {}

    def __enter__(self):
        for name in SYNC_METHODS:
            original = getattr(torch.Tensor, name)
            self.saved[name] = original

            def counted(*args, _name=name, _original=original, **kwargs):
                self.counts[_name] += 1
                return _original(*args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc):
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)

    def total(self) -> int:
        return sum(self.counts.values())


class StepClock:
    """A batch_transform that timestamps every training step (and snapshots the sync count)."""

    def __init__(self, syncs: SyncCounter | None = None):
        self.times: list[float] = []
        self.syncs_at: list[int] = []
        self.syncs = syncs

    def __call__(self, x, y):
        self.times.append(time.perf_counter())
        self.syncs_at.append(self.syncs.total() if self.syncs else 0)
        return x, y


def bare_epoch(model, data, loss_fn, opt, cfg, epoch) -> list[float]:
    sampler = TrainBatches(len(data), cfg.batch_size, cfg.seed, epoch)
    times = []
    model.train()
    for x, y in DataLoader(data, batch_sampler=sampler):
        times.append(time.perf_counter())
        loss = loss_fn(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return times


def intervals(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times[1:])]  # drop the first (epoch start-up)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(2)
    job = resnet3d_job(
        n_train=args.n,
        n_val=16,
        size=args.size,
        epochs=1,
        ema_decay=None,
        log_every=10,
        checkpoint_every_minutes=None,
        warmup_epochs=0,
        augment=False,
    )
    cfg = job.config
    bare_model = nbt.models.resnet3d(depth=10, width=0.25, dropout=0.1)
    # The optimizer fit builds (fused AdamW), so the ratio measures fit itself, not an optimizer choice.
    bare_opt = torch.optim.AdamW(
        bare_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )
    steps = {"bare": [], "fit": [], "fit+ema": []}
    sync_loop, sync_all, n_steps = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            steps["bare"] += intervals(
                bare_epoch(bare_model, job.train_data, job.loss_fn, bare_opt, cfg, r + 1)
            )
            for name, ema in (("fit", None), ("fit+ema", 0.99)):
                model = nbt.models.resnet3d(depth=10, width=0.25, dropout=0.1)
                with SyncCounter() as syncs:
                    clock = StepClock(syncs)
                    nbt.fit(
                        model,
                        job.train_data,
                        job.val_data,
                        job.loss_fn,
                        cfg.replace(ema_decay=ema, seed=r),
                        Path(tmp) / name,
                        overwrite=True,
                        batch_transform=clock,
                        verbose=False,
                    )
                steps[name] += intervals(clock.times)
                if name == "fit":
                    d = [b - a for a, b in zip(clock.syncs_at, clock.syncs_at[1:])]
                    sync_loop += d
                    sync_all.append(syncs.total())
                    n_steps += len(clock.times)
            print(
                f"round {r + 1}/{args.rounds}: "
                + ", ".join(f"{k} {statistics.median(v) * 1e3:.1f} ms" for k, v in steps.items()),
                file=sys.stderr,
            )
    med = {k: statistics.median(v) for k, v in steps.items()}
    print(
        f"resnet3d depth 10 width 0.25, batch {cfg.batch_size}, {args.size}^3 volumes, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds, {len(steps['bare'])} steps each"
    )
    print(
        f"median step: bare {med['bare'] * 1e3:.1f} ms, fit {med['fit'] * 1e3:.1f} ms, "
        f"fit+EMA {med['fit+ema'] * 1e3:.1f} ms"
    )
    print(f"fit / bare        = {med['fit'] / med['bare']:.3f}x  (target <= 1.02)")
    print(f"fit+EMA / bare    = {med['fit+ema'] / med['bare']:.3f}x")
    print(
        f"host syncs per optimizer step in fit's step loop: {statistics.mean(sync_loop):.2f} "
        f"(target <= 1; the log-interval read is the only one)"
    )
    print(
        f"host syncs per optimizer step over all of fit (validation, checkpoints included): "
        f"{sum(sync_all) / n_steps:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
