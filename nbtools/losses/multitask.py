"""Named heads, each with its loss and weight: a model returning {"cov": ..., "k": ...} (or a tuple of
different roles, segmentation_models_pytorch's (masks, labels) with aux_params) against targets that come
as a dict (or tuple) from the dataset. Seed 002: a covariance matrix (MSE) and the source count K (CE).

`with_terms` gives the total with every term, weighted and not, on the device (no host sync), for
telemetry and the per-term gradients (nbtools.step.term_grads); `head_tasks` tells the task layer which
task each head is, for its metrics (val_cov_rmse, val_k_acc, ...). Structure errors (a head without a
loss, a loss without a head, a missing target) are raised at every call, from Python alone; `check`
adds the checks that read the device (non-finite targets), for preflight and the overfit test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from nbtools.losses.combine import ComboLoss, DeepSupervisionLoss, main_output
from nbtools.losses.dice import DiceLoss, LogCoshDiceLoss
from nbtools.losses.dice_ce import DiceCELoss
from nbtools.losses.focal import FocalLoss

TASKS = ("classification", "segmentation", "regression")
REGRESSION_LOSSES = (nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss)
# losses that take float targets as labels: 0/1, soft or one-hot (any other loss on floats: say the task)
LABEL_LOSSES = (nn.BCEWithLogitsLoss, nn.BCELoss, nn.CrossEntropyLoss, nn.MultiLabelSoftMarginLoss, FocalLoss,
                DiceLoss, LogCoshDiceLoss, DiceCELoss, ComboLoss, DeepSupervisionLoss)  # fmt: skip


def _is_integer(t: torch.Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex()


def _dense(out: torch.Tensor, target: torch.Tensor) -> bool:
    """A per-voxel target for outputs (B, C, *spatial): a class map (B, *spatial), (B, 1, *spatial), or
    one-hot/soft targets shaped like the outputs."""
    if out.dim() < 3:
        return False
    b, spatial = out.shape[0], tuple(out.shape[2:])
    return tuple(target.shape) in ((b, *spatial), (b, 1, *spatial), tuple(out.shape))


class MultiTaskLoss(nn.Module):
    """sum over heads of weight * loss(outputs[head], targets[head]).

    heads: {name: (loss, weight)}, in the order the terms are reported. Names are the keys of the model's
        output dict; for a tuple output, int keys are positions (named "0", "1", ... in metrics), or give
        `order` = the names of the tuple's positions, e.g. order=("masks", "labels").
    tasks: {name: "classification" | "segmentation" | "regression"} for heads `head_tasks` cannot tell.
    Weights are finite and >= 0; 0 keeps a head's loss in the telemetry without training on it.

    Example:
        >>> loss = MultiTaskLoss({"cov": (nn.MSELoss(), 1.0), "k": (nn.CrossEntropyLoss(), 0.05)})
        >>> out = {"cov": torch.randn(4, 3, 3), "k": torch.randn(4, 5)}
        >>> y = {"cov": torch.randn(4, 3, 3), "k": torch.randint(0, 5, (4,))}
        >>> total, terms = loss.with_terms(out, y)
        >>> sorted(terms)
        ['cov', 'cov.raw', 'k', 'k.raw']
        >>> loss.head_tasks(out, y)
        {'cov': 'regression', 'k': 'classification'}
    """

    def __init__(
        self,
        heads: Mapping,
        tasks: Mapping[str, str] | None = None,
        order: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(heads, Mapping) or not heads:
            raise ValueError(
                f"MultiTaskLoss: heads must be a non-empty dict {{name: (loss, weight)}}, got {heads!r}"
            )
        self.losses = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        self.positions: dict[str, int] = {}  # where each head sits in a tuple/list of outputs or targets
        order = None if order is None else [str(n) for n in order]
        for key, part in heads.items():
            name = self._name(key)
            if not (isinstance(part, tuple) and len(part) == 2 and callable(part[0])):
                raise ValueError(
                    f"MultiTaskLoss: heads[{key!r}] must be a (loss, weight) tuple, got {part!r}"
                )
            w = part[1]
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
                raise ValueError(
                    f"MultiTaskLoss: the weight of head {name!r} must be a finite number >= 0, got {w!r}"
                )
            if not isinstance(part[0], nn.Module):
                raise TypeError(
                    f"MultiTaskLoss: the loss of head {name!r} must be an nn.Module, got {part[0]!r}"
                )
            self.losses[name], self.weights[name] = part[0], float(w)
            if isinstance(key, int):
                self.positions[name] = key
            elif order is not None:
                if name not in order:
                    raise ValueError(f"MultiTaskLoss: head {name!r} is not in order={order}")
                self.positions[name] = order.index(name)
        self.names = list(self.weights)
        self.tasks = dict(tasks or {})
        for name, task in self.tasks.items():
            if name not in self.weights or task not in TASKS:
                raise ValueError(
                    f"MultiTaskLoss: tasks[{name!r}] = {task!r}; heads are {self.names}, tasks one of {TASKS}"
                )

    @staticmethod
    def _name(key) -> str:
        if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
            return str(key)
        if not isinstance(key, str) or not key or any(c in key for c in ".|"):
            raise ValueError(
                f"MultiTaskLoss: head names are non-empty strings without '.' or '|' (or tuple positions "
                f"0, 1, ...), got {key!r}"
            )
        return key

    def extra_repr(self) -> str:
        return f"weights={self.weights}" + (f", positions={self.positions}" if self.positions else "")

    def _pick(self, values, what: str) -> dict:
        """{head: value} from a dict (by name), or a tuple/list (by position)."""
        if isinstance(values, Mapping):
            keys = {str(k): k for k in values}
            missing = [n for n in self.names if n not in keys]
            if missing:
                h = missing[0]
                if what == "outputs":
                    raise ValueError(
                        f"MultiTaskLoss has a loss for head {h!r} but the model's outputs have no {h!r} "
                        f"(outputs: {list(keys)}); return it from forward or drop its loss"
                    )
                raise ValueError(
                    f"the targets have no {h!r} for head {h!r} (target keys: {list(keys)}); return "
                    f"(x, {{{', '.join(repr(n) for n in self.names)}}}) from the dataset"
                )
            extra = [k for k in keys if k not in self.weights]
            if extra and what == "outputs":
                raise ValueError(
                    f"the model's output {extra[0]!r} has no loss in MultiTaskLoss (heads: {self.names}); add "
                    f"{extra[0]!r}: (loss, weight) (weight 0.0 watches it without training on it) or stop "
                    "returning it from forward"
                )
            return {n: values[keys[n]] for n in self.names}
        if isinstance(values, (list, tuple)):
            unplaced = [n for n in self.names if n not in self.positions]
            if unplaced:
                raise ValueError(
                    f"the {what} are a {type(values).__name__}, but head {unplaced[0]!r} has no position: "
                    f"key the heads 0, 1, ... or pass order=(names of the positions)"
                )
            beyond = [n for n in self.names if self.positions[n] >= len(values)]
            if beyond:
                h = beyond[0]
                raise ValueError(
                    f"head {h!r} is position {self.positions[h]} but the {what} have {len(values)} entries"
                    + ("; return it from forward or drop its loss" if what == "outputs" else "")
                )
            spare = sorted(set(range(len(values))) - set(self.positions.values()))
            if spare and what == "outputs":
                raise ValueError(
                    f"the model's output {spare[0]} (of {len(values)}) has no loss in MultiTaskLoss "
                    f"(positions {sorted(self.positions.values())}); give it one (weight 0.0 to watch it)"
                )
            return {n: values[self.positions[n]] for n in self.names}
        raise TypeError(
            f"MultiTaskLoss takes {what} as a dict {{head: tensor}} or a tuple, got {type(values).__name__}"
            + ("; a single-output model needs its head's loss alone" if what == "outputs" else "")
        )

    def with_terms(self, outputs, targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the total, {head: weighted loss, head + ".raw": unweighted, head + ".<part>": the head loss's own
        terms when it has `with_terms`}), all attached to the graph, on the device."""
        outs, tgts = self._pick(outputs, "outputs"), self._pick(targets, "targets")
        total, terms = None, {}
        for name in self.names:
            loss = self.losses[name]
            if hasattr(loss, "with_terms"):
                value, parts = loss.with_terms(outs[name], tgts[name])
            else:
                value, parts = loss(outs[name], tgts[name]), {}
            w = self.weights[name]
            weighted = value if w == 1.0 else value * w  # no op for a weight of 1
            terms[name], terms[f"{name}.raw"] = weighted, value
            for part, v in parts.items():
                if part == "raw":
                    raise ValueError(
                        f"the loss of head {name!r} names a part 'raw', which MultiTaskLoss reserves"
                    )
                terms[f"{name}.{part}"] = v
            total = weighted if total is None else total + weighted
        return total, terms

    def forward(self, outputs, targets) -> torch.Tensor:
        return self.with_terms(outputs, targets)[0]

    def head_tasks(self, outputs, targets) -> dict[str, str]:
        """{head: task} from `tasks` where given, else from its loss and the first batch: torch's
        MSE/L1/Huber/SmoothL1 on float targets is regression; a dense target for (B, C, *spatial) outputs
        segmentation; a target per sample (integer, or float 0/1 for BCE-like losses) classification.
        Any other loss on float targets must be named in `tasks`."""
        outs, tgts = self._pick(outputs, "outputs"), self._pick(targets, "targets")
        found = {}
        for name in self.names:
            if name in self.tasks:
                found[name] = self.tasks[name]
                continue
            loss, out, y = self.losses[name], main_output(outs[name]), tgts[name]
            regression = isinstance(loss, REGRESSION_LOSSES)
            shapes = f"outputs {tuple(out.shape)}, targets {y.dtype} {tuple(y.shape)}"
            if regression and _is_integer(y):
                raise TypeError(
                    f"head {name!r}: {type(loss).__name__} on integer targets ({shapes}): a regression head "
                    f"needs float targets (y.float()); class labels need a classification loss"
                )
            if regression:
                found[name] = "regression"
            elif not _is_integer(y) and not isinstance(loss, LABEL_LOSSES):
                found[name] = None  # a loss of the user's own on float targets: regression or soft labels?
            elif _dense(out, y):
                found[name] = "segmentation"
            elif y.dim() <= 2 and (y.dim() == 1 or y.shape[1] == 1 or tuple(y.shape) == tuple(out.shape)):
                found[name] = "classification"  # class indices, 0/1 labels, or multi-label targets
            else:
                found[name] = None
            if found[name] is None:
                raise ValueError(
                    f"cannot tell the task of head {name!r} ({type(loss).__name__}, {shapes}); say it: "
                    f"MultiTaskLoss(..., tasks={{{name!r}: 'regression' | 'classification' | 'segmentation'}})"
                )
        return found

    def check(self, outputs, targets) -> None:
        """Everything `with_terms` checks, and that every head's target is finite (one host read per head):
        a ValueError names the head and the first bad sample of the batch. For preflight, not every step."""
        tgts = self._pick(targets, "targets")
        self._pick(outputs, "outputs")
        for name in self.names:
            y = tgts[name]
            if not isinstance(y, torch.Tensor) or not y.is_floating_point():
                continue
            bad = ~torch.isfinite(y.detach()).reshape(len(y), -1).all(1)
            if bool(bad.any()):
                i = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"the target of head {name!r} is not finite in sample {i} of the batch "
                    f"({int(bad.sum())} such samples): fix or drop them (nbt.validate_dataset lists them)"
                )
