"""What does nbt.fit cost over a bare PyTorch loop? Run: python bench/overhead.py [--rounds 3]

1. Device ops per optimizer step (aten ops, counted by bench/opcount.py's OpCounter; on a GPU each
   is a kernel launch, ~5-10 us of host time), bare vs fit, at ResNet-10-3D and ResNet-50-3D. A bare
   step is forward, backward, clip_grad_norm_, fused AdamW step; fit's step is everything between
   the starts of two consecutive training steps in fit (guards, telemetry, the next batch's loading,
   which the bare loop pays too). Deterministic: the stable figure on a shared machine.
2. Step time at a ~1 ms step (a tiny 3D conv net at 16^3, one thread, where per-step host overhead
   shows most), paired: fit's `batch_transform` runs one bare step (on its own copy of the net, its
   batch fetched after its step as in a bare loop) right before each of fit's steps, and each fit step
   is timed from the end of that bare step to the start of the next. On a shared VM the machine's
   speed drifts by tens of percent over seconds, so pairs of neighbouring steps are the steady figure:
   the median of the per-step ratios, and the ratio of the mean steps (telemetry reads included).
   Then, alternating bare / fit / fit+EMA epoch by epoch in one process (round by round, so machine
   noise hits all alike), the same 1 ms regime and "ResNet-10-3D": the demo job's model at 32^3 (~60 ms
   steps). Step time = time between the starts of consecutive training steps of an epoch (the first
   step of each epoch, which also carries start-up, validation and checkpoint writing, is dropped).
   Ratios of median step times.
3. Host syncs (Tensor.item / __bool__ / __float__ / __int__ / tolist / cpu calls) per optimizer
   step inside fit's step loop and over the whole of fit.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from opcount import OpCounter
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nbtools as nbt
from nbtools.train.loader import TrainBatches

SYNC_METHODS = ("item", "__bool__", "__float__", "__int__", "tolist", "cpu")


def _in_loader() -> bool:
    """Called from inside a DataLoader's fetch: reads of the CPU batch being put together (the sample
    checks' label read), which on a GPU run in the loader's workers and wait for no device."""
    frame = sys._getframe(2)
    while frame is not None:
        if "torch/utils/data/" in frame.f_code.co_filename.replace("\\", "/"):
            return True
        frame = frame.f_back
    return False


class SyncCounter:
    """Counts Python-level calls of the Tensor methods that wait for the device, outside the
    DataLoader's fetch (counted apart in `in_loader`)."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.in_loader = 0
        self.saved = {}

    def __enter__(self):
        for name in SYNC_METHODS:
            original = getattr(torch.Tensor, name)
            self.saved[name] = original

            def counted(*args, _name=name, _original=original, **kwargs):
                if _in_loader():
                    self.in_loader += 1
                else:
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
    """A batch_transform that marks every training step: time, sync count, op count."""

    def __init__(self, syncs: SyncCounter | None = None, ops: OpCounter | None = None):
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.syncs_at: list[int] = []
        self.syncs, self.ops = syncs, ops

    def __call__(self, x, y):
        self.times.append(time.perf_counter())
        self.cpu.append(time.thread_time())
        self.syncs_at.append(self.syncs.total() if self.syncs else 0)
        if self.ops is not None:
            self.ops.mark()
        return x, y


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, 8, 3, stride=2, padding=1),
        nn.BatchNorm3d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


def resnet(depth: int) -> nn.Module:
    torch.manual_seed(0)
    return nbt.models.resnet3d(depth=depth, width=0.25, dropout=0.1)


def bare_epoch(model, data, cfg, epoch, ops: OpCounter | None = None) -> StepClock:
    """forward, backward, clip_grad_norm_, fused AdamW step (the optimizer fit builds)."""
    opt = bare_epoch.opts.setdefault(
        id(model), torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    )
    loss_fn = nn.CrossEntropyLoss()
    clock = StepClock(ops=ops)
    model.train()
    for x, y in DataLoader(data, batch_sampler=TrainBatches(len(data), cfg.batch_size, cfg.seed, epoch)):
        clock(x, y)
        loss_fn(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return clock


bare_epoch.opts = {}


class PairedBareStep:
    """A batch_transform that runs and times one bare step before each of fit's steps, by the wall
    clock and by the main thread's CPU time (with one thread all of a step's work runs there, and CPU
    time does not count what other processes on the machine take from it)."""

    def __init__(self, model: nn.Module, data, cfg, epoch: int):
        self.model, self.clip = model, cfg.clip_norm
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        self.loss = nn.CrossEntropyLoss()
        self.batches = iter(
            DataLoader(data, batch_sampler=TrainBatches(len(data), cfg.batch_size, cfg.seed, epoch))
        )
        self.batch = next(self.batches)
        self.bare: list[tuple[float, float]] = []  # bare step k: (wall, cpu) seconds
        self.fit: list[
            tuple[float, float]
        ] = []  # fit's step k: from the end of bare step k to the start of k + 1
        self.end: tuple[float, float] | None = None

    def __call__(self, x, y):
        start = time.perf_counter(), time.thread_time()
        if self.end is not None:
            self.fit.append((start[0] - self.end[0], start[1] - self.end[1]))
        bx, by = self.batch
        self.loss(self.model(bx), by).backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        # The next batch is fetched after the step, as in a bare loop: a fetch right after fit's own
        # would find the loader's code and data warm in the CPU caches and cost half as much.
        self.batch = next(self.batches, None)
        self.end = time.perf_counter(), time.thread_time()
        self.bare.append((self.end[0] - start[0], self.end[1] - start[1]))
        return x, y


def ratios(paired: PairedBareStep, clock: int) -> tuple[float, float, float, float]:
    """(median bare step, median fit step, median of the per-step ratios, ratio of the mean steps);
    fit step k follows bare step k, and the first pair, which carries the epoch's start-up, is dropped."""
    bare = [b[clock] for b in paired.bare[1 : len(paired.fit)]]
    fit = [f[clock] for f in paired.fit[1:]]
    per_step = statistics.median(f / b for f, b in zip(fit, bare))
    return (
        statistics.median(bare),
        statistics.median(fit),
        per_step,
        statistics.mean(fit) / statistics.mean(bare),
    )


def fit_epoch(model, data, val, cfg, run_dir, clock: StepClock) -> None:
    nbt.fit(
        model,
        data,
        val,
        nn.CrossEntropyLoss(),
        cfg,
        run_dir,
        overwrite=True,
        batch_transform=clock,
        verbose=False,
    )


def intervals(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times[1:])]  # drop the first (epoch start-up)


def config(batch_size: int, **kw) -> nbt.TrainConfig:
    return nbt.TrainConfig(
        epochs=1,
        batch_size=batch_size,
        lr=1e-3,
        clip_norm=1.0,
        log_every=10,
        checkpoint_every_minutes=None,
        **kw,
    )


def in_memory(n: int, size: int, seed: int) -> TensorDataset:
    """SyntheticVolumes generated once: loading costs both loops next to nothing."""
    ds = nbt.data.SyntheticVolumes(n=n, shape=(size,) * 3, seed=seed)
    xs, ys = zip(*(ds[i] for i in range(n)))
    return TensorDataset(torch.stack(xs), torch.tensor(ys))


def op_counts(tmp: Path) -> None:
    data, val = in_memory(24, 16, 1), in_memory(4, 16, 2)
    cfg = config(2)
    print("ops per optimizer step (steady state; the step that ends a telemetry interval in brackets)")
    for depth in (10, 50):
        with OpCounter() as ops:
            bare_epoch(resnet(depth), data, cfg, 1, ops)
        bare = statistics.median(ops.per_step()[1:])
        with OpCounter() as ops:
            clock = StepClock(ops=ops)
            fit_epoch(resnet(depth), data, val, cfg, tmp / f"ops{depth}", clock)
        steps = ops.per_step()[1:]
        fit, interval_end = statistics.median(steps), max(steps)
        print(
            f"  ResNet-{depth}-3D: bare {bare:.0f}, fit {fit:.0f} [{interval_end}]  "
            f"fit / bare = {fit / bare:.3f}x  (target <= 1.10)"
        )


def timing(name, make_model, data, val, cfg, rounds, tmp: Path, threads: int) -> None:
    """Ratios of median step times, wall clock and CPU time of the main thread. With one thread all
    the step's work runs on the main thread, so its CPU time does not count the time other processes
    on the machine take from it: the steadier figure on a shared machine."""
    torch.set_num_threads(threads)
    bare_model = make_model()
    wall = {"bare": [], "fit": [], "fit+ema": []}
    cpu = {k: [] for k in wall}
    sync_loop, sync_all, loader_reads, n_steps = [], [], 0, 0
    for r in range(rounds):
        clock = bare_epoch(bare_model, data, cfg, r + 1)
        wall["bare"] += intervals(clock.times)
        cpu["bare"] += intervals(clock.cpu)
        for variant, ema in (("fit", None), ("fit+ema", 0.99)):
            with SyncCounter() as syncs:
                clock = StepClock(syncs)
                fit_epoch(make_model(), data, val, cfg.replace(ema_decay=ema, seed=r), tmp / variant, clock)
            wall[variant] += intervals(clock.times)
            cpu[variant] += intervals(clock.cpu)
            if variant == "fit":
                sync_loop += [b - a for a, b in itertools.pairwise(clock.syncs_at)]
                sync_all.append(syncs.total())
                loader_reads += syncs.in_loader
                n_steps += len(clock.times)
        print(
            f"  {name} round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {statistics.median(v) * 1e3:.2f} ms" for k, v in wall.items()),
            file=sys.stderr,
        )
    print(
        f"{name}: batch {cfg.batch_size}, {threads} thread(s), {rounds} rounds, {len(wall['bare'])} steps each"
    )
    for label, t in (("wall clock", wall), ("main-thread CPU", cpu)):
        med = {k: statistics.median(v) for k, v in t.items()}
        print(
            f"  {label:15s}: bare {med['bare'] * 1e3:.2f} ms, fit {med['fit'] * 1e3:.2f} ms, fit+EMA "
            f"{med['fit+ema'] * 1e3:.2f} ms; fit / bare = {med['fit'] / med['bare']:.3f}x, "
            f"fit+EMA / bare = {med['fit+ema'] / med['bare']:.3f}x"
        )
    print(
        f"  host syncs per step in fit's loop {statistics.mean(sync_loop):.2f}, over all of fit "
        f"{sum(sync_all) / n_steps:.2f}; in the loader (the label check's read of the CPU batch) "
        f"{loader_reads / n_steps:.2f}"
    )


def paired(name, make_model, data, val, cfg, rounds, tmp: Path, threads: int) -> None:
    """fit's steps against bare steps run right before each of them (PairedBareStep): the ratios of the
    per-step times (median over the epoch) and of the mean step times (telemetry reads included),
    wall clock and main-thread CPU, each the median over the rounds."""
    torch.set_num_threads(threads)
    bare_model = make_model()
    summary = {"wall": ([], []), "CPU": ([], [])}
    for r in range(rounds):
        pairs = PairedBareStep(bare_model, data, cfg, r + 1)
        fit_epoch(make_model(), data, val, cfg.replace(seed=r), tmp / "paired", pairs)
        for clock, (per_step, mean) in enumerate(summary.values()):
            bare, fit, step_ratio, mean_ratio = ratios(pairs, clock)
            per_step.append(step_ratio)
            mean.append(mean_ratio)
        print(
            f"  {name} round {r + 1}/{rounds} (CPU): bare {bare * 1e3:.3f} ms, fit {fit * 1e3:.3f} ms, "
            f"per step {step_ratio:.3f}x, mean step {mean_ratio:.3f}x",
            file=sys.stderr,
        )
    print(
        f"{name}, paired: batch {cfg.batch_size}, {threads} thread(s), {rounds} rounds of {len(pairs.fit)} steps"
    )
    for label, (per_step, mean) in summary.items():
        print(
            f"  {label:4s}: fit / bare per step {statistics.median(per_step):.3f}x (rounds "
            f"{min(per_step):.3f}-{max(per_step):.3f}), mean step {statistics.median(mean):.3f}x (rounds "
            f"{min(mean):.3f}-{max(mean):.3f})  (target <= 1.05)"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-resnet-timing", action="store_true", help="ops and the 1 ms regime only")
    args = p.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        op_counts(tmp)
        print(f"load average {os.getloadavg()[0]:.2f}")
        paired(
            "1 ms step (tiny Conv3d net, 16^3)",
            tiny_net,
            in_memory(1024, 16, 1),
            in_memory(8, 16, 2),
            config(4),
            args.rounds + 1,
            tmp,
            1,
        )
        small, small_val = in_memory(256, 16, 1), in_memory(8, 16, 2)
        timing(
            "1 ms step (tiny Conv3d net, 16^3)", tiny_net, small, small_val, config(4), args.rounds, tmp, 1
        )
        if not args.skip_resnet_timing:
            data, val = in_memory(96, 32, 1), in_memory(16, 32, 2)
            timing(
                "ResNet-10-3D (width 0.25, 32^3)",
                lambda: resnet(10),
                data,
                val,
                config(8),
                args.rounds,
                tmp,
                2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
