"""Load pretrained weights (MedicalNet `.pth`, our own checkpoints, any state dict) and say what happened.

A silent partial load is the failure this module exists to prevent: every call returns a `LoadReport`
that counts what was loaded and names what was missing, skipped or ignored, and a load that matches
nothing raises instead of leaving a randomly initialised model that looks pretrained.

>>> model = resnet3d(depth=10)                                    # doctest: +SKIP
>>> rep = load_pretrained(model, "pretrain/resnet_10.pth")        # doctest: +SKIP
loaded 72/74 tensors from pretrain/resnet_10.pth; missing: fc.weight, fc.bias; skipped 0 mismatched; ...
"""

from __future__ import annotations

import logging
import os
import pickle
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")  # where trainers nest the weights
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
_BENIGN_MISSING = ".num_batches_tracked"  # BN step counter; only used when momentum=None
MEDICALNET_HELP = (
    "nbtools does not download MedicalNet weights: get them from the official Tencent/MedicalNet release "
    "(the 'data & pre-trained models' link in https://github.com/Tencent/MedicalNet's README, "
    "MedicalNet_pytorch_files.zip, folder pretrain/: resnet_10.pth, resnet_18.pth, resnet_34.pth, "
    "resnet_50.pth or the *_23dataset.pth variants), copy the file to your Drive and pass its path"
)


@dataclass
class LoadReport:
    """What `load_pretrained` did. `total` counts the model's state-dict tensors (buffers included).

    mismatched: [(key, checkpoint_shape, model_shape)], skipped and left at their current values.
    """

    loaded: int
    total: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    source: str = "state dict"

    @property
    def missing_weights(self) -> list[str]:
        """`missing` without BatchNorm `num_batches_tracked` counters, which older checkpoints lack."""
        return [k for k in self.missing if not k.endswith(_BENIGN_MISSING)]

    def __str__(self) -> str:
        real = self.missing_weights
        n_counters = len(self.missing) - len(real)
        missing = _abbreviate(real) if real else "none"
        if n_counters:
            missing += f" (+{n_counters} num_batches_tracked counters, harmless)"
        mism = f"skipped {len(self.mismatched)} mismatched"
        if self.mismatched:
            shown = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:3]]
            more = f", +{len(self.mismatched) - 3} more" if len(self.mismatched) > 3 else ""
            mism += f" ({'; '.join(shown)}{more})"
        unexp = f"ignored {len(self.unexpected)} unexpected"
        if self.unexpected:
            unexp += f" ({_groups(self.unexpected)})"
        head = f"loaded {self.loaded}/{self.total} tensors from {self.source}"
        text = f"{head}; missing: {missing}; {mism}; {unexp}"
        return "\n".join([text, *(f"hint: {h}" for h in _hints(self))])


def load_pretrained(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike | Mapping,
    strict: bool = False,
    verbose: bool = True,
) -> LoadReport:
    """Copy matching tensors from a checkpoint into `model` (in place) and return a `LoadReport`.

    path_or_state_dict: a `.pth`/`.pt` path (read with ``torch.load(map_location="cpu", weights_only=True)``),
    a state dict, or a checkpoint dict holding one under "state_dict", "model_state_dict" or "model"
    (MedicalNet saves ``{"state_dict": ...}`` with "module."-prefixed keys). "module." and "_orig_mod."
    prefixes are stripped from checkpoint keys; a DataParallel/compiled `model` is unwrapped.

    Keys the model lacks (e.g. MedicalNet's ``conv_seg.*`` segmentation head) are ignored and reported as
    `unexpected`; shape mismatches are skipped and reported as `mismatched`; model tensors not loaded are
    `missing` (for a fresh head such as ``fc.*`` that is expected).

    Raises:
        FileNotFoundError: the path does not exist (the message says where MedicalNet weights come from).
        ValueError: the file is not a loadable torch checkpoint; nothing in it matches the model (0 loaded;
            the message shows model and checkpoint keys side by side); or `strict` and something is
            missing or mismatched (the model is then left untouched). Missing ``num_batches_tracked``
            counters do not count against `strict`.

    verbose=True prints the report; otherwise it is logged at INFO.

    >>> rep = load_pretrained(resnet3d(depth=10), "pretrain/resnet_10.pth")      # doctest: +SKIP
    >>> rep.loaded, rep.total, rep.missing
    (72, 74, ['fc.weight', 'fc.bias'])
    """
    ckpt, source = _read_state_dict(path_or_state_dict)
    target = _unwrap(model)
    model_sd = target.state_dict()

    filtered: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for raw_key, value in ckpt.items():
        key = _strip_prefixes(raw_key)
        if key not in model_sd:
            unexpected.append(key)
        elif value.shape != model_sd[key].shape:
            mismatched.append((key, tuple(value.shape), tuple(model_sd[key].shape)))
        else:
            filtered[key] = value
    missing = [k for k in model_sd if k not in filtered]
    report = LoadReport(len(filtered), len(model_sd), missing, unexpected, mismatched, source)

    # BN step counters (shape ()) match any model; loading only those is loading nothing.
    if all(k.endswith(_BENIGN_MISSING) for k in filtered):
        raise ValueError(
            f"no tensor in {source} matches the model ({report}).\n{_side_by_side(model_sd, ckpt)}"
        )
    if strict and (report.missing_weights or mismatched):
        raise ValueError(f"strict load failed, model left unchanged: {report}")

    target.load_state_dict(filtered, strict=False)
    if verbose:
        print(report)
    else:
        logger.info("%s", report)
    return report


def _read_state_dict(obj: str | os.PathLike | Mapping) -> tuple[dict[str, torch.Tensor], str]:
    """Return (flat {key: tensor} state dict, description of where it came from)."""
    source = "state dict"
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        source = str(obj)
        if not path.is_file():
            raise FileNotFoundError(f"no pretrained weights file at {str(obj)!r}; {MEDICALNET_HELP}")
        _check_magic(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "unsupported global" not in str(e).lower():
                raise ValueError(f"{source} is not a readable torch checkpoint: {e}") from e
            raise ValueError(
                f"{source} holds Python objects besides tensors, which torch.load(weights_only=True) "
                "refuses. If you trust the file, load it yourself with torch.load(path, map_location='cpu', "
                "weights_only=False) and pass the result (or its 'state_dict') to load_pretrained"
            ) from e
        except Exception as e:
            raise ValueError(
                f"{source} ({path.stat().st_size} bytes) is not a readable torch checkpoint, or it is "
                f"truncated (an interrupted download or Drive sync): {type(e).__name__}: {e}"
            ) from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict or checkpoint dict from {source}, got {type(obj).__name__}")
    for key in _CHECKPOINT_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        found = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(obj.items())[:8])
        raise ValueError(
            f"{source} has no tensors at its top level nor under {_CHECKPOINT_KEYS}; found {{{found}}}. "
            "Pass the sub-dict that holds the weights"
        )
    return tensors, source


def _check_magic(path: Path) -> None:
    """Reject early what torch.save cannot have written: it writes a zip archive ("PK..."), or, before
    torch 1.6 (MedicalNet's files), a pickle (first byte 0x80)."""
    with path.open("rb") as f:
        head = f.read(64)
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return
    what = "an empty file" if not head else f"a file starting with {head[:32]!r}"
    if head.lstrip()[:1] == b"<":
        what += " (an HTML page: a download link saved its web page, e.g. Google Drive's virus-scan notice)"
    raise ValueError(f"{path} is not a torch checkpoint: it is {what}; download the .pth file itself again")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module whose state-dict keys are the plain names (no DataParallel / torch.compile wrapper)."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, stripped = key[len(p) :], True
    return key


def _groups(keys: list[str]) -> str:
    """'conv_seg.*' or 'conv_seg.* x14, head.* x2': keys grouped by their top-level module."""
    counts: dict[str, int] = defaultdict(int)
    for k in keys:
        counts[k.split(".")[0]] += 1
    if len(counts) == 1:
        return f"{next(iter(counts))}.*"
    return ", ".join(f"{g}.* x{n}" for g, n in counts.items())


def _abbreviate(keys: list[str], limit: int = 4) -> str:
    return ", ".join(keys) if len(keys) <= limit else f"{len(keys)} tensors in {_groups(keys)}"


def _hints(rep: LoadReport) -> list[str]:
    """Likely causes of a partial load, read off the report's own key lists."""
    hints = []
    mismatched = {k for k, _, _ in rep.mismatched}
    absent_ds = any(".downsample." in k and k not in mismatched for k in rep.missing_weights)
    unexpected_ds = any(".downsample." in k for k in rep.unexpected)
    if rep.loaded and absent_ds and not unexpected_ds:
        hints.append(
            "checkpoint has no downsample.* weights: it uses shortcut 'A' (MedicalNet resnet-18/34); "
            "build the model with resnet3d(..., shortcut='A')"
        )
    if rep.loaded and unexpected_ds and not absent_ds:
        hints.append(
            "checkpoint has downsample.* weights the model lacks: it uses shortcut 'B' "
            "(MedicalNet resnet-10/50); build the model with resnet3d(..., shortcut='B')"
        )
    conv1 = [m for m in rep.mismatched if m[0] == "conv1.weight"]
    if conv1 and len(conv1[0][1]) > 1 and conv1[0][1][1] != conv1[0][2][1]:
        hints.append(
            f"conv1 input channels differ (checkpoint {conv1[0][1][1]}, model {conv1[0][2][1]}): "
            "MedicalNet expects in_channels=1"
        )
    if len(rep.mismatched) > rep.loaded:
        hints.append(
            "most shapes differ: is the model built at width=1 and the same depth as the checkpoint?"
        )
    return hints


def _side_by_side(model_sd: Mapping[str, torch.Tensor], ckpt: Mapping[str, torch.Tensor], n: int = 6) -> str:
    """A few model keys next to a few checkpoint keys, so a prefix or naming mismatch is visible at once."""
    left = [f"{k} {tuple(v.shape)}" for k, v in list(model_sd.items())[:n]]
    right = [f"{k} {tuple(v.shape)}" for k, v in list(ckpt.items())[:n]]
    width = max(len(s) for s in [*left, "model keys"]) + 2
    rows = [f"{'model keys':<{width}}checkpoint keys"]
    rows += [f"{a:<{width}}{b}" for a, b in zip_longest(left, right, fillvalue="")]
    return "\n".join(rows)
