"""Regression on standardised targets: the training set's mean and std per output, the transform there
and back, and the head's bias at zero (the training mean, in standardised units).

Why: a head whose targets sit at 1e3 with a spread of 1e2 spends its first thousand steps moving its
bias; its gradients dwarf the trunk's and the loss scale depends on the units. Standardised, every output
starts at loss ~1 (predicting the mean), whatever its units, and a multi-output loss weighs each output
alike. (On brain-volume crops a ResNet-10-3D head on raw targets at lr 2e-3 reached R^2 below zero; on
standardised targets about 0.5.) The std is the population std (ddof=0, as scikit-learn's
StandardScaler); an output whose target is constant (std <= CONSTANT_REL x |mean|) keeps std 1: it is
only shifted, and named in a warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nbtools.data.samples import labels_of, sample_paths, sample_tensor, split_sample
from nbtools.tasks.regression import CONSTANT_REL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetScaler:
    """The training targets' mean and std per output (flattened, user units), for a target of `shape`
    per sample. JSON round trip: `to_dict` / `from_dict` (the run records it)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    shape: tuple[int, ...]  # one sample's target: () for a scalar, (3, 3) for a covariance matrix
    n: int  # training samples the statistics came from
    constant: tuple[int, ...] = ()  # flat indices of outputs with a constant target (their std is 1)

    def __post_init__(self) -> None:
        k = math.prod(self.shape)
        if len(self.mean) != k or len(self.std) != k:
            raise ValueError(
                f"TargetScaler: {len(self.mean)} means, {len(self.std)} stds for shape {self.shape}"
            )
        if not all(math.isfinite(v) for v in self.mean) or not all(
            s > 0 and math.isfinite(s) for s in self.std
        ):
            raise ValueError(
                f"TargetScaler: mean must be finite and std finite and > 0, got {self.mean}, {self.std}"
            )

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=torch.float64, device=like.device).reshape(self.shape)
        return mean, torch.tensor(self.std, dtype=torch.float64, device=like.device).reshape(self.shape)

    def _check(self, y: torch.Tensor, what: str) -> None:
        if tuple(y.shape[1:]) != tuple(self.shape):
            raise ValueError(
                f"{what} of shape {tuple(y.shape)} do not fit the scaler's targets (B, *{self.shape}); "
                "pass a batch (B, ...) of the targets it was fitted on"
            )

    def standardise(self, y: torch.Tensor) -> torch.Tensor:
        """(y - mean) / std for a batch y (B, *shape) in user units; float32 (float64 stays float64)."""
        self._check(y, "targets")
        mean, std = self._stats(y)
        return ((y.double() - mean) / std).to(y.dtype if y.dtype == torch.float64 else torch.float32)

    def unstandardise(self, z: torch.Tensor) -> torch.Tensor:
        """z * std + mean: standardised outputs or targets (B, *shape) back in user units, z's dtype."""
        self._check(z, "outputs")
        mean, std = self._stats(z)
        return (z.double() * std + mean).to(z.dtype)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "shape": list(self.shape), "n": self.n,
                "constant": list(self.constant)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> TargetScaler:
        return cls(
            tuple(d["mean"]), tuple(d["std"]), tuple(d["shape"]), int(d["n"]), tuple(d.get("constant", ()))
        )


def _from_moments(total: np.ndarray, squares: np.ndarray, shift: np.ndarray, n: int, shape) -> TargetScaler:
    """The scaler from sums of (y - shift) and (y - shift)^2 over n samples (float64)."""
    mean = shift + total / n
    std = np.sqrt(np.maximum(squares / n - (total / n) ** 2, 0.0))
    constant = (std == 0) | (std <= CONSTANT_REL * np.abs(mean))
    if constant.any():
        log.warning(
            "%d of %d regression outputs have a constant target over the %d training samples (flat indices %s): "
            "they are shifted by their mean, not scaled, and have no R^2", constant.sum(), len(mean), n,
            np.flatnonzero(constant)[:10].tolist(),
        )  # fmt: skip
    std = np.where(constant, 1.0, std)
    return TargetScaler(tuple(mean.tolist()), tuple(std.tolist()), tuple(shape), n,
                        tuple(np.flatnonzero(constant).tolist()))  # fmt: skip


def _refuse_nonfinite(y: np.ndarray, ds, first_index: int = 0) -> None:
    bad = np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).all(1))
    if bad.size:
        i = first_index + int(bad[0])
        paths = sample_paths(ds)
        where = f" ({paths[i]})" if paths is not None else ""
        raise ValueError(
            f"the regression target of training sample {i}{where} is not finite "
            f"({y.reshape(len(y), -1)[bad[0]].tolist()[:6]}); {bad.size} such sample(s) in all: "
            "fix or drop them (nbt.validate_dataset lists them)"
        )


def target_stats(ds) -> TargetScaler:
    """The training set's TargetScaler: from its targets as a whole when the dataset keeps them
    (`.labels`, `.targets`, `.y`, a TensorDataset, through Subsets: no sample is loaded), else from one
    pass over `ds[i]` (inputs are loaded too: a dataset's cost once). Non-finite targets are refused,
    named by index (and file)."""
    labels = labels_of(ds)
    if labels is not None:
        y = labels.detach().cpu().double().numpy()
        if len(y) == 0:
            raise ValueError("the training set is empty: no targets to standardise")
        _refuse_nonfinite(y, ds)
        flat = y.reshape(len(y), -1)
        shift = flat[0]
        return _from_moments((flat - shift).sum(0), ((flat - shift) ** 2).sum(0), shift, len(y), y.shape[1:])
    shape, shift, total, squares = None, None, None, None
    for i in range(len(ds)):
        _, target, has = split_sample(ds[i])
        t = sample_tensor(target) if has else None
        if t is None:
            raise ValueError(f"training sample {i} has no numeric target ({type(target).__name__}); "
                             "a regression dataset returns (input, target)")  # fmt: skip
        y = t.detach().cpu().double().numpy()
        if shape is None:
            shape, shift = y.shape, y.reshape(-1).copy()
            total, squares = np.zeros_like(shift), np.zeros_like(shift)
        elif y.shape != shape:
            raise ValueError(
                f"training sample {i} has a target of shape {y.shape}, sample 0 {shape}: one shape"
            )
        _refuse_nonfinite(y[None], ds, i)
        d = y.reshape(-1) - shift
        total += d
        squares += d * d
    if shape is None:
        raise ValueError("the training set is empty: no targets to standardise")
    return _from_moments(total, squares, shift, len(ds), shape)


def zero_final_bias(model: nn.Module, num_outputs: int | None = None, layer: str | None = None) -> str:
    """Set the bias of the model's final Linear to 0 (the training mean, in standardised units) and
    return that layer's name. The layer: `layer` if named, else the one nn.Linear with `num_outputs`
    out_features (or the one nn.Linear of the model, when num_outputs is None). Refuses, naming the
    candidates, when there is none or more than one, or when it has no bias.

    >>> zero_final_bias(nbt.models.resnet3d(num_classes=3), num_outputs=3)   # doctest: +SKIP
    'fc'
    """
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if layer is not None:
        if layer not in linears:
            raise ValueError(
                f"layer {layer!r} is not an nn.Linear of the model; its Linear layers: {_listed(linears)}"
            )
        picked = [layer]
    else:
        picked = [n for n, m in linears.items() if num_outputs is None or m.out_features == num_outputs]
    if len(picked) != 1:
        want = "nn.Linear" if num_outputs is None else f"nn.Linear with {num_outputs} outputs"
        raise ValueError(
            f"cannot tell the final layer: the model has {len(picked)} {want} ({_listed(linears)}); "
            "name it: zero_final_bias(model, layer='<name>')"
        )
    name = picked[0]
    if linears[name].bias is None:
        raise ValueError(f"the final layer {name!r} has no bias (bias=False): build it with bias=True")
    with torch.no_grad():
        linears[name].bias.zero_()
    log.info("regression head %r: bias set to 0 (the training mean in standardised units)", name)
    return name


def _listed(linears: dict[str, nn.Linear]) -> str:
    if not linears:
        return "none"
    return ", ".join(f"{n or '<model>'} ({m.in_features}->{m.out_features})" for n, m in linears.items())
