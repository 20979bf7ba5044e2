"""What `fit` checks before the first epoch, so bad data fails in seconds, not after an epoch of training.

Without a pass over the data: both sets hold samples; the first sample of each reads, is an
(input, label) pair, batches, and goes through the model (the validation inputs have the training
inputs' shape, so a wrong-channel validation set is caught here); its label suits the model's outputs
and the loss computes on it as validation will compute it. Labels a dataset keeps as a whole (`.labels`,
`.targets`, `.y`, a TensorDataset's second tensor) are all checked: whole numbers in [0, outputs), or in
[0, 1] for a one-output model. Each error names the data, the index and what to do; a full scan is
`nbt.validate_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from nbtools.data.checked import CheckedSamples, SampleError
from nbtools.data.samples import is_unlabelled, labels_of, sample_paths
from nbtools.losses import main_output
from nbtools.train.accel import as_input
from nbtools.train.task_setup import plan_task

_SHOW = 5  # bad labels named in one message


def preflight(
    model: nn.Module,
    train_data,
    val_data,
    loss_fn: Callable,
    device: torch.device,
    channels_last=False,
    task: str = "auto",
    monitor: str | None = None,
) -> dict:
    """Raise ValueError (TypeError for a sample that is no pair) naming what cannot train; see the module.
    Returns what it found of the task (nbtools.train.task_setup.plan_task): {"name", ...}; {} when the
    data are DataLoaders (make_loader refuses them). task: TrainConfig.task ("auto" infers it); monitor:
    TrainConfig.monitor, refused when the task does not record it."""
    if train_data is None or val_data is None:
        raise ValueError(_missing_data("train_data" if train_data is None else "val_data"))
    if isinstance(train_data, DataLoader) or isinstance(val_data, DataLoader):
        return {}  # make_loader refuses a DataLoader, saying what to pass
    sets = (("training data", train_data), ("validation data", val_data))
    for what, data in sets:
        if len(data) == 0:
            raise ValueError(f"the {what} is empty (len 0); pass at least one sample")
    batches = {what: _first_batch(what, data) for what, data in sets}
    (x_train, y_train), (x_val, y_val) = batches["training data"], batches["validation data"]
    # whole validation volumes larger than the training patches are a segmentation run's (sliding window)
    whole = x_val.shape[1] == x_train.shape[1] and x_val.dim() == x_train.dim() >= 4
    if x_val.shape[1:] != x_train.shape[1:] and not whole:
        raise ValueError(
            f"validation samples have shape {tuple(x_val.shape[1:])} but training samples "
            f"{tuple(x_train.shape[1:])} (validation data[0] against training data[0]): the model trained on "
            f"one cannot be validated on the other; check the channels and size of the validation set"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            same = x_val.shape[1:] == x_train.shape[1:]
            what, x = ("validation data", x_val) if same else ("training data", x_train)
            out = _forward(model, as_input(x.to(device), channels_last), what)
            found = plan_task(task, out, _on(y_train, device), loss_fn, train_data, x_train, monitor)
            if not same:
                if found["name"] != "segmentation":
                    raise ValueError(
                        f"validation samples have shape {tuple(x_val.shape[1:])} but training samples "
                        f"{tuple(x_train.shape[1:])}: only a segmentation run validates whole volumes larger "
                        f"than its training patches (this run's task is {found['name']})"
                    )
                if tuple(y_val.shape[-(x_val.dim() - 2) :]) != tuple(x_val.shape[2:]):
                    raise ValueError(
                        f"validation data[0]: mask {tuple(y_val.shape[1:])} does not fit image "
                        f"{tuple(x_val.shape[1:])}; masks have the image's spatial size"
                    )
            if found["name"] in ("classification", "segmentation"):
                main = main_output(out)
                outputs = main.shape[1] if main.dim() > 1 else 1
                for what, data in sets:
                    _check_labels(what, batches[what][1], outputs, data)
            if same:
                _check_loss(loss_fn, out, _on(y_val, device))
    finally:
        model.train(was_training)
    return found


def _on(y, device: torch.device):
    """Targets on the device: a tensor, or a dict/tuple of them (named heads)."""
    if isinstance(y, dict):
        return {k: _on(v, device) for k, v in y.items()}
    if isinstance(y, (list, tuple)):
        return type(y)(_on(v, device) for v in y)
    return y.to(device) if isinstance(y, torch.Tensor) else y


def _missing_data(name: str) -> str:
    if name == "train_data":
        return "train_data is None: fit needs a Dataset of (input, label) samples to train on"
    # fit does not train without validation: best.pt, early stopping, the monitor and the doctor's findings
    # all come from it, and a run with no best model has nothing for predict to use
    return (
        "val_data is None, but fit validates every epoch (best.pt, early stopping and the doctor's findings "
        "come from it): pass a validation Dataset, e.g. a stratified hold-out of your data: "
        "tr, va = nbt.data.holdout_split(labels, fraction=0.2), then fit(model, Subset(data, tr), "
        "Subset(data, va), ...) with torch.utils.data.Subset (or nbt.data.kfold(labels, k=5, fold=0) for "
        "cross-validation); a recipe holds one out itself (nbt.recipes.make_job(..., val=None))"
    )


def _first_batch(what: str, data) -> tuple[torch.Tensor, Any]:
    if is_unlabelled(data) or sample_paths(data) is not None:
        # refuses unlabelled data (naming nbt.predict) and listed labels outside the classes, naming the files
        CheckedSamples(data)
    try:
        sample = data[0]
    except ImportError:  # a missing package (nibabel ...) is no bad sample: its message says what to install
        raise
    except Exception as e:  # a user's dataset may raise anything; say which sample (and file) it was
        paths = sample_paths(data)
        file = f" ({paths[0]})" if paths else ""
        raise SampleError(
            f"the {what} cannot be read: {what}[0]{file} raised {type(e).__name__}: {e}; "
            f"nbt.validate_dataset(...) lists every sample that cannot be read"
        ) from e
    if not isinstance(sample, (tuple, list)) or len(sample) != 2:
        raise TypeError(
            f"fit expects each sample to be (input, label); {what}[0] is a {type(sample).__name__}"
        )
    if isinstance(sample[1], str):
        raise ValueError(
            f"the label of {what}[0] is {sample[1]!r} (a str), not a number: fit needs int class indices "
            f"(0, 1, ...); map class names to indices first"
        )
    try:
        x, y = default_collate([sample])
    except (TypeError, RuntimeError) as e:
        raise ValueError(
            f"{what}[0] cannot be batched ({e}); inputs must be tensors or numeric arrays"
        ) from e
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"the input of {what}[0] is {kind}, not floating point; convert it to float32")
    return x, y


def _forward(model: nn.Module, x: torch.Tensor, what: str):
    try:
        return model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise ValueError(
            f"the model cannot take {what}[0], an input of shape {tuple(x.shape[1:])} ({type(e).__name__}: {e}); "
            f"check the model's in_channels and the data's shape"
        ) from e


def _check_labels(what: str, y, outputs: int, data) -> None:
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"the label of {what}[0] is {y!r}, not a number: fit needs int class indices")
    known = labels_of(data)
    labels, names = (known, range(len(known))) if known is not None else (y, [0])
    v = labels.reshape(len(labels), -1).double()
    if outputs > 1:
        ok = torch.isfinite(v) & (v == v.round()) & (v >= 0) & (v < outputs)
        expected = f"whole numbers in [0, {outputs}) (the model has {outputs} outputs)"
    else:
        ok = torch.isfinite(v) & (v >= 0) & (v <= 1)
        expected = "in [0, 1] (the model has one output: binary targets)"
    bad = torch.nonzero(~ok.all(dim=1)).flatten().tolist()
    if not bad:
        return
    shown = "; ".join(f"index {names[i]}: {_values(v[i])}" for i in bad[:_SHOW])
    more = f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
    raise ValueError(
        f"the {what} has {len(bad)} bad label{'s' * (len(bad) > 1)} ({shown}{more}); labels must be {expected}; "
        f"nbt.validate_dataset(data, num_classes=...) lists every one"
    )


def _values(row: torch.Tensor) -> str:
    return f"label {row.item():g}" if row.numel() == 1 else f"mask values {row.unique()[:5].tolist()}"


def _shape(out) -> str:
    if isinstance(out, dict):
        return "{" + ", ".join(f"{k!r}: {_shape(v)}" for k, v in out.items()) + "}"
    return str(tuple(main_output(out).shape))


def _label(y) -> str:
    if isinstance(y, dict):
        return "{" + ", ".join(f"{k!r}: {_label(v)}" for k, v in y.items()) + "}"
    if isinstance(y, (list, tuple)):
        return "(" + ", ".join(_label(v) for v in y) + ")"
    return f"{y.flatten()[:4].tolist()} of dtype {y.dtype}"


def _check_loss(loss_fn: Callable, out, y) -> None:
    try:
        loss = loss_fn(out, y)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise ValueError(
            f"the loss cannot be computed on validation data[0]: model output of shape "
            f"{_shape(out)}, label {_label(y)} "
            f"({type(e).__name__}: {e}); class-index labels must be int64 (torch.long)"
        ) from e
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(
            f"the loss must return one number (a 0-d tensor), got {type(loss).__name__} {loss!r}"
        )
