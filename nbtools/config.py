"""TrainConfig: every training choice in one frozen dataclass, saved in every checkpoint."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtools.atomic import replace_atomic
from nbtools.env import PRECISIONS
from nbtools.monitors import METRIC_WORDS, MONITORS, TASKS, monitor_mode, monitor_parts

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adam", "sgd")
NAN_POLICIES = ("skip", "raise")
SCHEDULES = ("continue", "restart")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `fit` needs to know, validated on construction.

    >>> cfg = TrainConfig(epochs=40, lr=5e-5, group_lrs={"backbone": 5e-5, "classifier": 5e-4},
    ...                   warmup_epochs=3, clip_norm=0.5, ema_decay=0.999, patience=50)
    >>> TrainConfig.from_json(cfg.to_json()) == cfg
    True

    Groups: a parameter belongs to the `group_lrs` key that is the longest dotted prefix of its
    name (`"backbone"` takes `backbone.layer1.0.conv1.weight`); the rest form group "default" at `lr`.
    `unfreeze={8: "layer2"}`: every parameter whose name contains the dotted part `layer2` starts
    frozen (its BatchNorm in eval mode) and joins the optimizer at the start of epoch 8.
    """

    epochs: int = 10
    batch_size: int = 8
    eval_batch_size: int | None = None  # None: same as batch_size
    lr: float = 1e-3
    group_lrs: dict[str, float] = field(default_factory=dict)
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    warmup_epochs: float = 0  # may be a fraction; on resume, the length of the ramp to a new LR
    min_lr_factor: float = 0.01  # cosine ends at lr * min_lr_factor
    # how a resume that changes the plan (epochs, LRs) bends the LR curve: "continue" from the LR it is
    # at (a short ramp to a new LR), or "restart" warm, to the configured LR (nbtools.train.schedule)
    schedule: str = "continue"
    precision: str = "auto"
    amp_fallback: bool = True  # fp16 falls back to fp32 by itself when the scaler keeps skipping
    grad_accum: int = 1
    clip_norm: float | None = None
    ema_decay: float | None = None
    monitor: str = (
        "val_loss"  # val_loss, val_acc, val_dice, val_dice_<class>, val_r2, val_<head>_<metric>, ...
    )
    # "auto": fit tells it from the first batch (an integer map per voxel: segmentation; float targets:
    # regression; else classification) and records it; a resume keeps the recorded task
    task: str = "auto"
    patience: int | None = None  # None: no early stopping
    min_delta: float = 0.0
    min_epochs: int = 0
    unfreeze: dict[int, str] = field(default_factory=dict)
    nan_policy: str = "skip"
    max_bad_steps: int = 20  # non-finite optimizer steps in a row before the run stops
    keep_last: int = 3
    log_every: int = 10  # optimizer steps between telemetry reads (and possible mid-epoch checkpoints)
    checkpoint_every_steps: int | None = None
    checkpoint_every_minutes: float | None = 20.0  # Colab disconnects by the clock, not by the epoch
    # DataLoader processes; None: one per CPU core (up to 8) on a GPU, none on a CPU. A run keeps the count
    # it started with (its augmentations depend on it): config.json and checkpoints record the count
    num_workers: int | None = None
    # channels_last_3d (5-D) / channels_last (4-D) memory format for the model and every input batch:
    # faster convolutions on tensor-core GPUs under AMP (nbtools.train.accel)
    channels_last: bool = False
    # train through torch.compile(model); where it cannot compile, training runs uncompiled and says why.
    # Checkpoints hold the model's own keys either way
    compile: bool = False
    threshold: float = 0.5  # decision threshold for binary metrics
    seed: int = 0
    # MLflow tracking (pip install "nbtools[mlflow]"; nbtools.train.mlflow_log), None: off. A tracking URI
    # ("sqlite:///runs/mlflow.db", "http://host:5000", "databricks") or {"tracking_uri": ..., "experiment": ...};
    # kept as that dict (a missing tracking_uri is MLflow's own default: MLFLOW_TRACKING_URI)
    mlflow: dict[str, str | None] | None = None

    def __post_init__(self) -> None:
        _normalize(self)
        _validate(self)

    @property
    def monitor_mode(self) -> str:
        """'min' for a loss or an error (val_loss, val_mae, val_cov_rmse ...), 'max' for the rest."""
        return monitor_mode(self.monitor)

    # --- JSON round trip -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            replace_atomic(path, lambda f: f.write((text + "\n").encode()))
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            # Checkpoints from a newer nbtools may carry fields we do not know; say so, do not crash.
            log.warning("ignoring unknown TrainConfig fields %s", ", ".join(unknown))
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> TrainConfig:
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def diff(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields that differ, as {field: (self value, other value)}."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


class ConfigFieldError(ValueError):
    """A TrainConfig field given a value it cannot take; `.field` names it (the CLI names its flag)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


def _fail(field_name: str, expected: str, value: Any) -> None:
    raise ConfigFieldError(field_name, f"TrainConfig.{field_name} must be {expected}, got {value!r}")


SEED_LIMIT = 2**63  # seeds go to torch.manual_seed and numpy; offsets per rank are added to them


def _plain(v: Any) -> Any:
    """numpy scalars (np.int64 from a sweep, np.float32 from a computed LR) as Python numbers."""
    if type(v).__module__ != "numpy":
        return v
    if type(v).__name__ in ("bool", "bool_"):  # np.bool_ is no numbers.Number
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    return float(v) if isinstance(v, numbers.Real) else v


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _normalize(c: TrainConfig) -> None:
    """Numbers as plain Python numbers and the two mappings as {str: float} and {int: str}, or a
    ValueError naming the field; runs before `_validate`."""
    for f in dataclasses.fields(c):
        object.__setattr__(c, f.name, _plain(getattr(c, f.name)))
    lrs = c.group_lrs
    expected = 'a {group prefix: lr > 0} mapping, e.g. {"backbone": 5e-5, "classifier": 5e-4} ({} for none)'
    if not isinstance(lrs, dict):
        _fail("group_lrs", expected, lrs)
    for k, v in lrs.items():
        if not isinstance(k, str) or not _is_number(_plain(v)):
            _fail("group_lrs", expected, lrs)
    object.__setattr__(c, "group_lrs", {k: float(_plain(v)) for k, v in lrs.items()})
    plan = c.unfreeze
    expected = 'an {epoch >= 1: module-name part} mapping, e.g. {8: "layer2"} ({} for none)'
    if not isinstance(plan, dict):
        _fail("unfreeze", expected, plan)
    parsed = {}
    for k, v in plan.items():
        k = _plain(k)
        # JSON turns int keys into strings; accept "8" so from_json round-trips.
        if isinstance(k, str) and k.strip().isdigit():
            k = int(k)
        if isinstance(k, bool) or not isinstance(k, int) or not isinstance(v, str):
            _fail("unfreeze", expected, plan)
        parsed[k] = v
    object.__setattr__(c, "unfreeze", parsed)
    object.__setattr__(c, "mlflow", _mlflow_settings(c.mlflow))


MLFLOW_EXPERIMENT = "nbtools"  # the experiment of TrainConfig(mlflow=URI)


def _mlflow_settings(v: Any) -> dict[str, str | None] | None:
    """TrainConfig.mlflow as {"tracking_uri": str | None, "experiment": str}, or None."""
    expected = (
        'None, a tracking URI ("sqlite:///runs/mlflow.db", "http://host:5000") or '
        '{"tracking_uri": URI, "experiment": NAME}'
    )
    if v is None:
        return None
    d = {"tracking_uri": v} if isinstance(v, str) else v
    if not isinstance(d, dict) or not set(d) <= {"tracking_uri", "experiment"}:
        _fail("mlflow", expected, v)
    uri, name = d.get("tracking_uri"), d.get("experiment", MLFLOW_EXPERIMENT)
    if (uri is not None and not (isinstance(uri, str) and uri.strip())) or not (
        isinstance(name, str) and name.strip()
    ):
        _fail("mlflow", expected + " with non-empty strings", v)
    return {"tracking_uri": uri.strip() if uri else None, "experiment": name.strip()}


def _validate(c: TrainConfig) -> None:
    def positive_int(name: str, allow_none: bool = False, allow_zero: bool = False) -> None:
        v = getattr(c, name)
        if v is None and allow_none:
            return
        lo = 0 if allow_zero else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            _fail(name, f"an int >= {lo}" + (" or None" if allow_none else ""), v)

    def finite(
        name: str,
        lo: float,
        hi: float = math.inf,
        allow_none: bool = False,
        open_lo: bool = False,
        open_hi: bool = False,
    ):
        v = getattr(c, name)
        if v is None and allow_none:
            return
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)
        if not ok:
            bound = f"> {lo}" if open_lo else f">= {lo}"
            top = f" and < {hi}" if open_hi else f" and <= {hi}"
            rng = f"a finite number {bound}" + (top if hi != math.inf else "")
            _fail(name, rng + (" or None" if allow_none else ""), v)

    positive_int("epochs")
    positive_int("batch_size")
    positive_int("eval_batch_size", allow_none=True)
    positive_int("grad_accum")
    positive_int("patience", allow_none=True)
    positive_int("min_epochs", allow_zero=True)
    positive_int("max_bad_steps")
    positive_int("keep_last")
    positive_int("log_every")
    positive_int("checkpoint_every_steps", allow_none=True)
    positive_int("num_workers", allow_zero=True, allow_none=True)
    positive_int("seed", allow_zero=True)
    if c.seed >= SEED_LIMIT:
        _fail("seed", f"an int >= 0 and < 2**63 ({SEED_LIMIT})", c.seed)
    finite("lr", 0.0, open_lo=True)
    finite("weight_decay", 0.0)
    finite("momentum", 0.0, 1.0)
    finite("warmup_epochs", 0.0)
    if c.warmup_epochs > c.epochs:
        _fail("warmup_epochs", f"<= epochs ({c.epochs}): the LR would never reach its peak", c.warmup_epochs)
    finite("min_lr_factor", 0.0, 1.0)
    finite("clip_norm", 0.0, open_lo=True, allow_none=True)
    # 1.0 would keep the EMA copy at the initial weights for the whole run
    finite("ema_decay", 0.0, 1.0, allow_none=True, open_lo=True, open_hi=True)
    finite("min_delta", 0.0)
    finite("checkpoint_every_minutes", 0.0, open_lo=True, allow_none=True)
    finite("threshold", 0.0, 1.0)
    for name, allowed in (
        ("precision", PRECISIONS),
        ("optimizer", OPTIMIZERS),
        ("nan_policy", NAN_POLICIES),
        ("schedule", SCHEDULES),
        ("task", TASKS),
    ):
        v = getattr(c, name)
        if v not in allowed:
            _fail(name, "one of " + ", ".join(map(repr, allowed)), v)
    if monitor_parts(c.monitor) is None:
        _fail(
            "monitor",
            "one of " + ", ".join(map(repr, MONITORS)) + ", a class's 'val_dice_<class>', an output's "
            "'val_mae_<output>' or a head's 'val_<head>_<metric>' (metrics: " + ", ".join(METRIC_WORDS) + ")",
            c.monitor,
        )
    for name in ("amp_fallback", "channels_last", "compile"):
        if not isinstance(getattr(c, name), bool):
            _fail(name, "True or False", getattr(c, name))
    for k, v in c.group_lrs.items():
        if not k or not math.isfinite(v) or v <= 0:
            _fail("group_lrs", "a {group prefix: lr > 0} mapping", {k: v})
    for epoch, part in c.unfreeze.items():
        if epoch < 1 or not part:
            _fail("unfreeze", "an {epoch >= 1: module-name part} mapping", {epoch: part})
