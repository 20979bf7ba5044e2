"""Small models, data and comparisons shared by the tests."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import Dataset

import nbtools as nbt


class NoisyBlobs(Dataset):
    """Tiny 2D binary data with a random augmentation drawn from the global torch RNG, so a resume
    that fails to restore RNG states shows up."""

    def __init__(self, n: int = 48, size: int = 8, seed: int = 0, augment: bool = True):
        g = torch.Generator().manual_seed(seed)
        self.y = (torch.rand(n, generator=g) < 0.4).long()
        self.x = torch.randn(n, 1, size, size, generator=g) + self.y.view(-1, 1, 1, 1).float()
        self.augment = augment

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        x = self.x[i]
        if self.augment:
            x = x + 0.1 * torch.randn_like(x)
        return x, self.y[i]


def small_cnn(seed: int = 1, classes: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(4 * 36, classes),
    )


def tiny_fit(cfg, run_dir, *, model=None, train=None, val=None, loss_fn=None, **kw):
    """nbt.fit on the tests' tiny task: small_cnn() on NoisyBlobs(), validated on
    NoisyBlobs(seed=1, augment=False), with cross-entropy and verbose=False; pass any of them to
    change it, and fit's other arguments as keywords."""
    return nbt.fit(
        small_cnn() if model is None else model,
        NoisyBlobs() if train is None else train,
        NoisyBlobs(seed=1, augment=False) if val is None else val,
        nn.CrossEntropyLoss() if loss_fn is None else loss_fn,
        cfg,
        run_dir,
        **{"verbose": False, **kw},
    )


class StopAfter:
    """A batch_transform that raises after `n` batches: a Colab disconnect at a chosen moment."""

    class Disconnect(Exception):
        pass

    def __init__(self, n: int):
        self.n = n

    def __call__(self, x, y):
        self.n -= 1
        if self.n < 0:
            raise StopAfter.Disconnect
        return x, y


def assert_same(a, b, path: str = "") -> None:
    """Recursive bit-exact comparison of tensors, dicts, lists and numbers (NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b) or (
            a.is_floating_point()
            and torch.equal(a.isnan(), b.isnan())
            and torch.equal(a.nan_to_num(), b.nan_to_num())
        ), f"tensors differ at {path}"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"keys differ at {path}: {set(a) ^ set(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"lengths differ at {path}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]
