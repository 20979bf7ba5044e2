"""`check_augmentation`: run a transform on real samples and flag what it does to the data.

A pipeline that clips z-scored images to >= 0 (so gamma returns no NaN) moves their mean from 0 to
~0.4, and nothing fails: the model just trains on other data. This runs the transform, op by op where it
can see the ops, on the user's own samples, and flags NaN/Inf it creates, inputs outside an op's
domain, and a systematic shift of the mean or std; with segmentation samples, masks whose labels were
interpolated or whose class set changed (`augmask`).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from nbtools.data.augmask import MaskRecord, as_array, judge_masks, mask_of
from nbtools.data.augment3d import Augment3D
from nbtools.data.augreport import AugIssue, AugReport, OpRecord, Stats, judge

# Ops whose math is only defined on part of the real line (albumentations class names). x**gamma is
# NaN for x < 0 in float; these colour ops assume float images in [0, 1] (or uint8).
NONNEGATIVE_OPS = {"RandomGamma": "computes x**gamma, which is NaN for x < 0"}
UNIT_RANGE_OPS = {
    name: "assumes float images in [0, 1] (or uint8)"
    for name in ("ColorJitter", "HueSaturationValue", "RandomToneCurve", "Solarize", "ToSepia", "FancyPCA")
}


def check_augmentation(
    transform: Callable,
    samples: Any,
    trials: int = 8,
    tolerance: float = 0.3,
    *,
    seed: int = 0,
    max_samples: int = 16,
) -> AugReport:
    """Run `transform` `trials` times on each sample and report what it does to the data.

    transform: an albumentations transform or Compose (called as `transform(image=x)["image"]` on
    numpy HWC; a CHW tensor sample is converted), an `nbt.data.Augment3D` (called on the samples
    stacked into one batch (B, C, D, H, W)), or any callable taking one tensor sample and returning it.
    samples: a list of arrays/tensors, a tensor (N, ...), or a Dataset (up to `max_samples` evenly
    spaced samples; issues then name dataset indices). Segmentation samples, ``(x, mask)`` items of a
    dataset or list whose mask covers x's voxels, go through the transform together: albumentations
    with `mask=`, Augment3D as `transform(x, mask)`, a plain callable as `transform(x, mask) -> (x, mask)`.
    Flags, per op of a Compose (the pipeline as a whole otherwise): "nonfinite" (NaN/Inf that were not
    in the input), "domain" (input outside the op's domain, e.g. negative values into RandomGamma, even
    when p < 1 kept it from firing here), "mean_shift" / "std_shift" (averaged over samples and trials,
    the mean moves by more than `tolerance` input stds, or the std changes by more than `tolerance` of
    itself), "range" (an output reaches beyond the input's [min, max] by more than `tolerance` of its span);
    for masks, "mask_interpolated" (values that are not class ids of the input: linear resampling) and
    "mask_classes" (a class of the input gone from the output).

    tolerance=0.3, from these measurements (mean shift in input stds / std change; 8 samples x 8
    trials; test_augcheck.py checks the first rows):
        clip to >= 0 on z-scored data                          +0.40 / -42 %   flagged
        RandomGamma on [0, 1] images                            -0.05 /  +0 %
        Augment3D gamma only, z-scored SyntheticVolumes          0.00 /  +0 %
        RandomBrightnessContrast, [0, 1] images                 +0.19 /  +1 %
        Rotate(limit=15), zero fill, [0, 1] images              -0.15 / +14 %
        Affine(±8 % zoom and shift, ±11.5°), zero fill          -0.26 / +23 %
        Augment3D defaults, SyntheticVolumes (noise=1)           0.00 / -29 %
    Random intensity ops move single samples by more (gamma by up to ~±0.5 std) but average out over
    samples and trials, which is why shifts are averaged before they are judged. The last row is real:
    trilinear resampling averages neighbouring voxels, so on data dominated by voxel-level noise it
    lowers the std (by up to ~45 % for a rotation of pure white noise), and training volumes look
    smoother than validation ones; on real scans the drop is a few %. Raise `tolerance` to accept it.
    Randomness: an albumentations transform is deep-copied and seeded with `seed` (the caller's keeps
    its own state); Augment3D and plain callables draw from the global Python/NumPy/torch RNGs, which
    are seeded with `seed` and restored afterwards.

    >>> rep = nbt.check_augmentation(A.Compose([A.RandomGamma(p=0.25)]), z_scored_images)  # doctest: +SKIP
    >>> print(rep)                                                                       # doctest: +SKIP
    AugReport (albumentations): 8 samples x 8 trials: 2 issues: NOT OK
      op 0 RandomGamma: nonfinite (sample 1): created NaN/Inf in 9 of 64 calls (sample 1, trial 3: ...)
      op 0 RandomGamma: domain (sample 0): RandomGamma computes x**gamma, which is NaN for x < 0; ...
    """
    if not (isinstance(trials, int) and trials >= 1):
        raise ValueError(f"trials must be an int >= 1, got {trials!r}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    names, inputs, masks = _samples(samples, max_samples)
    kind, ops, run = _plan(transform, inputs, seed, masks)
    records = [OpRecord(label, domain) for label, domain in ops]
    mask_records = [MaskRecord(label) for label, _ in ops] if masks is not None else []
    whole = OpRecord("pipeline", None)
    with _seeded(seed), np.errstate(all="ignore"):  # NaN from the transform is reported, not warned
        for trial in range(trials):
            for i, steps in enumerate(run()):
                for rec, (before, after, *_) in zip(records, steps):
                    rec.add(names[i], trial, Stats.of(before), Stats.of(after))
                whole.add(names[i], trial, Stats.of(steps[0][0]), Stats.of(steps[-1][1]))
                for mrec, (_, _, mask_before, mask_after) in zip(mask_records, steps):
                    mrec.add(names[i], trial, mask_before, mask_after)
    issues: list[AugIssue] = []
    for rec in records:
        issues += judge(rec, tolerance)
    if len(records) > 1:
        seen = {i.kind for i in issues}
        issues += [i for i in judge(whole, tolerance) if i.kind not in seen]
    for mrec in mask_records:
        issues += judge_masks(mrec)
    return AugReport(issues, whole.pooled("before"), whole.pooled("after"), records, len(names), trials, kind)


def _samples(samples: Any, max_samples: int) -> tuple[list, list, list | None]:
    """(names, inputs, masks): masks None unless every sample is an (x, mask) pair."""
    if isinstance(samples, (torch.Tensor, np.ndarray)):
        return list(range(len(samples))), list(samples), None
    if isinstance(samples, (list, tuple)):
        return list(range(len(samples))), *_split_masks(list(samples), pairs_only=True)
    if hasattr(samples, "__getitem__") and hasattr(samples, "__len__"):
        n = len(samples)
        idx = (
            sorted(set(np.linspace(0, n - 1, min(n, max_samples)).round().astype(int).tolist())) if n else []
        )
        return idx, *_split_masks([samples[i] for i in idx], pairs_only=False)
    raise TypeError(
        f"samples must be a list of arrays/tensors, a tensor (N, ...) or a Dataset, got {type(samples).__name__}"
    )


def _split_masks(items: list, pairs_only: bool) -> tuple[list, list | None]:
    """Inputs, and masks when every item is (x, mask); a list of plain samples is kept whole
    (pairs_only), a dataset's items give their first element."""
    pairs = all(isinstance(s, (tuple, list)) and len(s) >= 2 and mask_of(s[0], s[1]) for s in items)
    if items and pairs:
        return [s[0] for s in items], [s[1] for s in items]
    if pairs_only:
        return items, None
    return [s[0] if isinstance(s, (tuple, list)) else s for s in items], None


def _plan(
    transform: Callable, inputs: list, seed: int, masks: list | None = None
) -> tuple[str, list[tuple[str, dict | None]], Callable]:
    """(kind, [(op label, domain rule)], run) where run() yields, per sample, [(op input, op output,
    op's input mask, op's output mask)] (the masks None without masks)."""
    if not inputs:
        raise ValueError("check_augmentation needs at least one sample")
    album = _albumentations_ops(transform)
    if album is not None:
        images = [_hwc(x) for x in inputs]
        targets = [None] * len(images) if masks is None else [as_array(m) for m in masks]
        ops = copy.deepcopy(album)  # seeding below must not touch the caller's transform
        ops.set_random_seed(seed)  # as Compose(seed=seed) would: a Compose passes it to its ops
        steps = list(ops.transforms) if _is_compose(ops) else [ops]

        def run_album() -> Iterator[list]:
            for img, mask in zip(images, targets):
                trace, cur = [], img
                for op in steps:
                    out = op(image=cur) if mask is None else op(image=cur, mask=mask)
                    trace.append((cur, out["image"], mask, out.get("mask")))
                    cur, mask = out["image"], out.get("mask")
                yield trace

        labels = [(f"op {j} {_op_name(op)}", _domain(op)) for j, op in enumerate(steps)]
        return "albumentations", labels, run_album
    if isinstance(transform, Augment3D):
        vols = [torch.as_tensor(x) for x in inputs]
        if any(v.dim() != 4 or v.shape != vols[0].shape for v in vols):
            raise ValueError(
                f"Augment3D is checked on samples (C, D, H, W) of one shape, got {sorted({tuple(v.shape) for v in vols})}"
            )
        batch = torch.stack(vols)
        stacked = None if masks is None else torch.stack([torch.as_tensor(m) for m in masks])

        def run_batch() -> Iterator[list]:
            out, moved = transform(batch, stacked)
            for j, (v, o) in enumerate(zip(vols, out)):
                yield [(v, o, None if stacked is None else stacked[j], None if stacked is None else moved[j])]

        return "Augment3D", [("Augment3D", None)], run_batch
    if not callable(transform):
        raise TypeError(f"transform must be callable, got {type(transform).__name__}")
    tensors = [torch.as_tensor(x) for x in inputs]
    name = getattr(transform, "__name__", type(transform).__name__)
    targets = None if masks is None else [torch.as_tensor(m) for m in masks]

    def run_callable() -> Iterator[list]:
        for j, t in enumerate(tensors):  # clones: an in-place transform must not change the samples
            if targets is None:
                yield [(t, transform(t.clone()), None, None)]
            else:
                out, moved = transform(t.clone(), targets[j].clone())
                yield [(t, out, targets[j], moved)]

    return "callable", [(name, None)], run_callable


def _albumentations_ops(transform: Any) -> Any | None:
    try:
        import albumentations as A
    except ImportError:
        return None
    return transform if isinstance(transform, (A.BaseCompose, A.BasicTransform)) else None


def _is_compose(op: Any) -> bool:
    """A Compose runs its ops one after the other, so they can be stepped through one by one (a
    OneOf or SomeOf picks among them and is checked as one op)."""
    import albumentations as A

    return isinstance(op, A.Compose)


def _op_name(op: Any) -> str:
    name = type(op).__name__
    if hasattr(op, "transforms"):  # OneOf, SomeOf, nested Compose
        name += "[" + ", ".join(_op_name(t) for t in op.transforms) + "]"
    return name


def _domain(op: Any) -> dict | None:
    """The domain rule of op, or of the first op inside a OneOf/SomeOf that has one."""
    name = type(op).__name__
    if name in NONNEGATIVE_OPS:
        return {"op": name, "low": 0.0, "high": None, "why": NONNEGATIVE_OPS[name]}
    if name in UNIT_RANGE_OPS:
        return {"op": name, "low": 0.0, "high": 1.0, "why": UNIT_RANGE_OPS[name]}
    for child in getattr(op, "transforms", []):
        rule = _domain(child)
        if rule is not None:
            return rule
    return None


def _hwc(x: Any) -> np.ndarray:
    """Albumentations wants numpy HWC; a CHW tensor (C in 1, 3, 4) is transposed."""
    if isinstance(x, torch.Tensor):
        arr = x.detach().cpu().numpy()
        return (
            np.ascontiguousarray(arr.transpose(1, 2, 0))
            if arr.ndim == 3 and arr.shape[0] in (1, 3, 4)
            else arr
        )
    return np.asarray(x)


@contextmanager
def _seeded(seed: int):
    """Seed Python, NumPy and torch for the check, and give the caller its RNG states back."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)
