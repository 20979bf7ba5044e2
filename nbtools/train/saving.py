"""Writing the training checkpoints of `fit`: only a finite state is kept as a checkpoint.

During a run of non-finite steps (a NaN planted in a weight, say) every step is skipped and the
weights stay NaN; an epoch checkpoint written then would be the newest "good" one and pruning would
delete the clean ones behind it, so that `resume="latest"` stopped again at once. A state whose
weights, EMA or optimizer state hold a NaN or Inf is therefore not written (the epoch is still in
metrics.json, and a finding says so), and the newest clean checkpoint is never pruned by it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nbtools.atomic import save_atomic
from nbtools.runs import Finding, list_checkpoints, prune_checkpoints


def _tensors(st):
    for name, t in st.model.state_dict().items():
        yield "model", name, t
    if st.ema is not None:
        for name, t in st.ema.module.state_dict().items():
            yield "EMA", name, t
    names = {id(p): n for n, p in st.model.named_parameters()}
    for group in st.optimizer.param_groups:
        for p in group["params"]:
            for key, t in st.optimizer.state.get(p, {}).items():
                if isinstance(t, torch.Tensor):
                    yield "optimizer", f"{key} of {names.get(id(p), '?')}", t


@torch.no_grad()
def nonfinite_state(st) -> str | None:
    """The first non-finite tensor of the model, EMA or optimizer state ("model weight
    0.weight"), or None when all are finite. One host sync."""
    found = [(kind, name, t) for kind, name, t in _tensors(st) if t.is_floating_point() and t.numel()]
    if not found:
        return None
    ok = torch.stack([torch.isfinite(t).all() for _, _, t in found]).tolist()
    bad = next((i for i, good in enumerate(ok) if not good), None)
    return None if bad is None else f"{found[bad][0]} tensor {found[bad][1]} is not finite"


def describe_newest_clean(run_dir: Path) -> str:
    """Where a run stopped on non-finite steps can go on from, as a sentence."""
    found = list_checkpoints(run_dir).valid()
    if not found:
        return "no checkpoint was written before them"
    c = found[-1]
    where = f"epoch {c.epoch}" + (f" + {c.batch} batches" if c.batch else "")
    return (
        f'the newest clean checkpoint is {c.path.name} ({where}, step {c.step}); resume="latest" goes to it'
    )


def save_checkpoint(st, run, watcher, dist, path: Path, prune: bool = False) -> Finding | None:
    """Write st's training state, with `run` and the watcher's state, to `path` (atomically) and prune
    (keep_last), unless it is not finite: then nothing is written or pruned and a Finding says so.
    Every rank calls it under torchrun (to_checkpoint gathers the RNG states); rank 0 writes."""
    bad = nonfinite_state(st)
    if bad is not None:
        return Finding(
            "checkpoint-not-finite",
            f"{path.name} was not written: {bad}; {describe_newest_clean(path.parent)}",
            "the run is in a stretch of non-finite steps (see the nonfinite findings); resume from the clean "
            "checkpoint once the cause is fixed",
            epoch=st.epoch,
            step=st.step,
        )
    state = st.to_checkpoint(run, watcher.state_dict(), dist)
    if dist.is_main:
        save_atomic(state, path)
        if prune:
            prune_checkpoints(path.parent, st.cfg.keep_last)
    return None
