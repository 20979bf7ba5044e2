"""Turn numpy / torch values into plain JSON (seed 003 lost a run's metrics.json to a numpy float)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch


def to_jsonable(obj: Any) -> Any:
    """Recursively convert to JSON-safe Python: numpy/torch scalars and arrays become numbers and
    lists, tuples become lists, Paths become strings, and NaN/inf become None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    raise TypeError(
        f"cannot store {type(obj).__name__} value {obj!r} in JSON; convert it to a number or string"
    )
