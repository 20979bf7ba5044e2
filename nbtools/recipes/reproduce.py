"""Our users' failures (shared/seeds), reproduced on purpose in seconds on a CPU, and caught.

Each function plants one failure in a tiny run and returns a `Reproduction`: what the seed report
saw, what nbtools said about it (findings, a report), and whether it was caught. 05_debug runs them;
tests/test_reproduce.py checks every one is caught, so a change that stops catching a failure
users already hit fails a test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from nbtools.config import TrainConfig
from nbtools.data.augcheck import check_augmentation
from nbtools.data.segsynthetic import SyntheticSegVolumes
from nbtools.data.synthetic import SyntheticVolumes
from nbtools.diagnose import doctor, find_nonfinite
from nbtools.losses import DeepSupervisionLoss, DiceCELoss, FocalLoss, log_cosh
from nbtools.train import fit


@dataclass
class Reproduction:
    seed: str  # which report, and what it saw
    caught: bool
    evidence: list[str] = field(default_factory=list)  # what nbtools said

    def __str__(self) -> str:
        head = f"{'CAUGHT' if self.caught else 'MISSED'}: {self.seed}"
        return "\n".join([head, *(f"  {line}" for line in self.evidence)])


def _data(n: int = 32) -> tuple[Dataset, Dataset]:
    return SyntheticVolumes(n=n, shape=(16, 16, 16), seed=1), SyntheticVolumes(
        n=16, shape=(16, 16, 16), seed=2
    )


def _tiny(classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, classes)
    )


def _fit(model, loss_fn, cfg: TrainConfig, run_dir: Path, train: Dataset | None = None, val=None):
    """A quiet fit over a fresh run_dir, on the tiny volumes unless data is given."""
    if train is None or val is None:
        train, val = _data()
    return fit(model, train, val, loss_fn, cfg, run_dir, overwrite=True, verbose=False)


class Fp16GradOverflow(torch.autograd.Function):
    """Identity forward; gradients overflow while they are fp16, as Conv3d gradients did under a
    too-large loss scale (finite in fp32 and bf16)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * math.inf if g.dtype == torch.float16 else g


class OverflowsInFp16(nn.Module):
    """`body` followed by Fp16GradOverflow: a model whose fp16 gradients always overflow."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return Fp16GradOverflow.apply(self.body(x))


def frozen_fp16(run_dir: str | Path) -> Reproduction:
    """Seeds 000/002: fp16 GradScaler skipped every step and the weights froze; the fix was 'AMP off
    for good'. Here every fp16 gradient overflows; the AMP monitor notices and falls back to fp32."""
    cfg = TrainConfig(epochs=8, batch_size=4, precision="fp16", log_every=5, checkpoint_every_minutes=None)
    run = _fit(OverflowsInFp16(_tiny()), nn.CrossEntropyLoss(), cfg, Path(run_dir))
    amp = [f for f in run.findings if f.code == "amp-skipped-steps"]
    moved = any(r["drift"] > 0 for r in run.steps[-3:])
    return Reproduction(
        "seed 002: fp16 loss scaling froze the weights (delta-param = 0)",
        bool(amp) and moved,
        [str(f) for f in amp] + [f"weights moving again after the fallback: {moved}"],
    )


class _RawUnits(Dataset):
    """Volumes never normalized: scanner units up to ~1e5, beyond fp16's 65504."""

    def __init__(self, base: Dataset, scale: float = 2e4):
        self.base, self.scale = base, scale

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x * self.scale, y


def fp16_forward_overflow(run_dir: str | Path) -> Reproduction:
    """Seed 000: "Conv3d produces NaN/Inf in fp16"; the fix was AMP off for good. Here the volumes
    are in raw units: every fp16 forward overflows at the first Conv3d while fp32 computes the same
    batch finitely. fit re-runs the bad step in fp32, names the layer, switches and keeps training,
    instead of stopping on 'NaN' with advice to lower the LR."""
    train, val = _data()
    cfg = TrainConfig(epochs=3, batch_size=4, precision="fp16", log_every=2, checkpoint_every_minutes=None)
    run = _fit(_tiny(), nn.CrossEntropyLoss(), cfg, Path(run_dir), _RawUnits(train), _RawUnits(val))
    amp = [f for f in run.findings if f.code == "amp-overflow"]
    moved = all(r["drift"] > 0 for r in run.steps[-3:])
    wrong_advice = [f.code for f in run.findings if f.code.startswith("nonfinite")]
    done = run.stop is None and len(run.history) == cfg.epochs
    return Reproduction(
        "seed 000: Conv3d produced NaN/Inf in fp16 (AMP turned off for good)",
        bool(amp) and "Conv3d" in amp[0].message and moved and done and not wrong_advice,
        [str(f) for f in amp]
        + [f"trained all {len(run.history)} epochs after the switch, weights moving: {moved}"],
    )


def logcosh_overflow() -> Reproduction:
    """Seed 001: log(cosh(x)) overflowed to inf/NaN; the fix was a clamp. log_cosh is exact instead."""
    x = torch.tensor([0.5, 2.0, 50.0, 100.0, 1000.0], requires_grad=True)
    naive = torch.log(torch.cosh(x))
    naive.sum().backward()
    naive_grad, x.grad = x.grad.clone(), None
    ours = log_cosh(x)
    ours.sum().backward()
    finite = bool(torch.isfinite(ours).all() and torch.isfinite(x.grad).all())
    ok_where_naive_is = torch.allclose(ours[torch.isfinite(naive)], naive[torch.isfinite(naive)])
    return Reproduction(
        "seed 001: log-cosh Dice overflowed (cosh(88) = inf, log(inf) -> NaN loss)",
        finite and ok_where_naive_is,
        [
            f"x               {x.detach().tolist()}",
            f"log(cosh(x))    {naive.detach().tolist()}  grad {naive_grad.tolist()}",
            f"nbt log_cosh(x) {[round(v, 4) for v in ours.detach().tolist()]}  grad {x.grad.tolist()}",
        ],
    )


class _NaNAt(Dataset):
    def __init__(self, base: Dataset, index: int):
        self.base, self.index = base, index

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return (torch.full_like(x, math.nan) if i == self.index else x), y


def focal_nan(run_dir: str | Path) -> Reproduction:
    """Seed 004: Loss=nan at epoch 27; the fix was clamping logits and nan_to_num. Here one corrupt
    sample makes the focal loss NaN: the step is skipped, reported with its step, and the NaN
    locator names where it came from."""
    train, val = _data()
    bad = _NaNAt(train, 5)
    cfg = TrainConfig(epochs=2, batch_size=4, log_every=2, checkpoint_every_minutes=None)
    loss_fn = FocalLoss(gamma=2.0, alpha=0.25)
    run = _fit(_tiny(classes=1), loss_fn, cfg, Path(run_dir), bad, val)
    caught = [f for f in run.findings if f.code == "nonfinite-loss"]
    x = torch.stack([bad[i][0] for i in range(4, 8)])
    where = find_nonfinite(_tiny(classes=1), (x, torch.tensor([bad[i][1] for i in range(4, 8)])), loss_fn)
    finite = all(torch.isfinite(p).all() for p in run.model.parameters())
    return Reproduction(
        "seed 004: NaN loss at epoch 27 with Focal Loss",
        bool(caught) and where == "input" and finite,
        [str(f) for f in caught]
        + [f"find_nonfinite on the bad batch: {where}", f"weights all finite: {finite}"],
    )


def _clip_at_zero(x: np.ndarray, **kwargs) -> np.ndarray:
    return np.clip(x, 0, None)


def gamma_on_zscore() -> Reproduction:
    """Seed 001: a clip to >= 0 on every image plus RandomGamma on z-scored data moved the mean 0 -> 0.5."""
    import albumentations as A

    samples = [np.random.default_rng(i).normal(size=(32, 32, 1)).astype(np.float32) for i in range(8)]
    trap = A.Compose([A.Lambda(image=_clip_at_zero, p=1.0), A.RandomGamma(p=0.25)])
    report = check_augmentation(trap, samples)
    return Reproduction(
        "seed 001: gamma after z-score and a clip to >= 0 wrecked the normalization",
        not report.ok,
        [str(i) for i in report.issues],
    )


class _SaysPositive(nn.Module):
    """Predicts class 1 for everything, whatever the input (recall 1, precision = the base rate)."""

    def __init__(self):
        super().__init__()
        self.head = _tiny()

    def forward(self, x):
        return self.head(x) * 0 + torch.tensor([0.0, 4.0], device=x.device)


def class_collapse(run_dir: str | Path) -> Reproduction:
    """Seed 000: 'recall stuck at 99 %' meant the model predicted positive for everything."""
    cfg = TrainConfig(epochs=3, batch_size=4, checkpoint_every_minutes=None)
    run = _fit(_SaysPositive(), nn.CrossEntropyLoss(), cfg, Path(run_dir))
    found = [f for f in doctor(run) if f.code == "class-collapse"]
    return Reproduction(
        "seed 000: recall stuck at 99 %, precision 25-31 %", bool(found), [str(f) for f in found]
    )


def stopped_too_early(run_dir: str | Path) -> Reproduction:
    """Seed 001: early stopping fired while the model was still warming up (it woke at epoch 22)."""
    cfg = TrainConfig(
        epochs=6,
        batch_size=4,
        lr=1e-6,
        patience=1,
        min_epochs=2,
        min_delta=0.01,
        checkpoint_every_minutes=None,
    )
    run = _fit(_tiny(), nn.CrossEntropyLoss(), cfg, Path(run_dir))
    found = [f for f in doctor(run) if f.code == "stopped-too-early"]
    return Reproduction(
        "seed 001: early stopping at epoch 56 right after a slow start",
        bool(found) and run.stop is not None and run.stop.code == "early-stop",
        [f"run: {run.stopped}", *(str(f) for f in found)],
    )


class _ListEverywhere(nn.Module):
    """A segmentation net that returns [main, aux] in train and eval mode alike, as seed 001's did."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU())
        self.main, self.aux = nn.Conv3d(8, classes, 1), nn.Conv3d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(x)
        aux = F.interpolate(self.aux(F.avg_pool3d(h, 2)), size=x.shape[2:], mode="trilinear")
        return [self.main(h), aux]


def deep_supervision_list(run_dir: str | Path) -> Reproduction:
    """Seed 001: the deep-supervision list [main, aux...] reached the metric (`outputs > threshold`) and
    validation crashed. fit scores the main output of a list and reports val_dice."""
    train = SyntheticSegVolumes(8, shape=(16, 16, 16), num_classes=2, seed=1)
    val = SyntheticSegVolumes(4, shape=(16, 16, 16), num_classes=2, seed=2)
    model = _ListEverywhere()
    with torch.no_grad():
        outputs = model.eval()(val[0][0][None])
    try:
        _ = outputs > 0.5  # seed 001's metric on the model's eval output
        naive = "no error"
    except TypeError as e:
        naive = f"TypeError: {e}"
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-2, monitor="val_dice", checkpoint_every_minutes=None)
    run = _fit(
        model.train(), DeepSupervisionLoss(DiceCELoss(), weights="nnunet"), cfg, Path(run_dir), train, val
    )
    dice = [r.get("val_dice") for r in run.history]
    scored = len(dice) == cfg.epochs and all(d is not None and math.isfinite(d) for d in dice)
    return Reproduction(
        "seed 001: validation crashed on the deep-supervision list (outputs > threshold)",
        naive.startswith("TypeError") and scored and run.task.get("name") == "segmentation",
        [
            f"seed 001's metric on [main, aux]: {naive}",
            f"fit: task {run.task.get('name')}, val_dice per epoch {[round(d, 4) for d in dice]} (the main output)",
        ],
    )
