"""Class names as a user reads them: a run on the user's folders records them (label i is
meta["data"]["classes"][i]); a run on the demo sets or of plain `fit` records none and says "class 1".

Findings, the dashboard, the report figures and `compare_runs` name a class through `class_name`, so
"class 1" reads the same everywhere and becomes "forged (class 1)" wherever the run knows the name.
"""

from __future__ import annotations

from typing import Any


def class_names(meta: dict[str, Any] | None) -> list[str] | None:
    """The class names a run records in its meta (label order), or None when it records none."""
    meta = meta or {}
    data = meta.get("data")
    classes = meta.get("classes") or (data.get("classes") if isinstance(data, dict) else None)
    return [str(c) for c in classes] if isinstance(classes, (list, tuple)) and classes else None


def class_name(classes: list[str] | None, k: int) -> str:
    """Label `k` for people: "forged (class 1)" when the names are known, else "class 1"."""
    if not classes or not 0 <= k < len(classes):
        return f"class {k}"
    return f"{classes[k]} (class {k})"


def positive_name(classes: list[str] | None) -> str:
    """The positive class of a binary task (label 1), as `class_name` says it."""
    return class_name(classes if classes is not None and len(classes) == 2 else None, 1)
