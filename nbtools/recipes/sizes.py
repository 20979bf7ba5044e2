"""A recipe's sizes: the tiny ones of smoke mode (CI runs every notebook with them) and a volume's shape."""

from __future__ import annotations

import os


def smoke_mode() -> bool:
    """True when NBTOOLS_SMOKE=1: CI runs every notebook with tiny sizes."""
    return os.environ.get("NBTOOLS_SMOKE", "") not in ("", "0")


def volume_shape(shape: int | tuple[int, ...] | list[int] | None, size: int) -> tuple[int, int, int]:
    """A recipe's volume shape: (D, H, W), an int for a cube (a notebook parameter papermill passes
    with -p), or None for (size,) * 3."""
    shape = shape or size
    shape = (shape,) * 3 if isinstance(shape, int) else tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (D, H, W) or one int for a cube, each >= 1, got {shape!r}")
    return shape
