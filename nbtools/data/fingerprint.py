"""A fingerprint of a folder dataset's file list, and what changed between two of them.

A run records `data_fingerprint(train_ds)`; a resume compares it with the data it finds and refuses a
change, naming it. Paths are relative to the dataset's root, so the same files under a new root (a
Google Drive mounted elsewhere, a folder moved with its files) compare equal: `moved`, and still `same`.
A file's identity is its relative path, size and label: content is not hashed (reading a whole
dataset from Drive at every resume costs minutes), so a file rewritten at the very same size passes.
A segmentation dataset (one with `.mask_paths`: SegmentationFolder) lists every image channel and every
mask, labelled "<case>:image" (or "<case>:image_0001", ...) and "<case>:mask" (with ":<digest>" of its
class ids when the dataset has `.mask_digests`: SegmentationFolder reads every mask anyway, so an edit
at the same file size shows too): a mask changed, removed, added or paired with another image is a change.
A regression dataset (one with `.targets` and `.target_names`: RegressionFolder) labels each file with its
targets ("age=63.5"), and its target names stand for the classes: a changed target is a change.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "nbtools-data-fingerprint"
SHOW = 5  # files named per kind of change in str(DataChange)


def data_fingerprint(dataset: Any) -> dict[str, Any]:
    """Plain JSON describing the dataset's files (anything with `.root`, `.paths`, `.labels`, `.classes`:
    VolumeFolder, ImageFolder).

    Returns {"format", "root" (as given), "root_resolved", "n_files", "classes", "labeled", "files":
    sorted [relative path (posix), size in bytes, label], "sha256" (of the files list)}. A label is its
    class name when it indexes `classes`, else the int (-1 for unlabelled files). A path outside root
    is kept relative with "..", or absolute on another drive.

    >>> fp = data_fingerprint(VolumeFolder("data/train", shape=(64, 64, 64)))   # doctest: +SKIP
    >>> fp["n_files"], fp["sha256"][:12]                                          # doctest: +SKIP
    (120, '3f1c2a9d0b7e')
    """
    if hasattr(dataset, "mask_paths"):
        return _segmentation_fingerprint(dataset)
    if hasattr(dataset, "target_names"):
        return _regression_fingerprint(dataset)
    for name in ("root", "paths", "labels", "classes"):
        if not hasattr(dataset, name):
            raise TypeError(
                f"data_fingerprint needs a dataset with .root, .paths, .labels and .classes (VolumeFolder, "
                f"ImageFolder); {type(dataset).__name__} has no .{name}"
            )
    root = Path(dataset.root)
    resolved = root.resolve()
    classes = [str(c) for c in dataset.classes]
    files = []
    for path, label in zip(dataset.paths, [int(v) for v in dataset.labels]):
        files.append(_entry(path, resolved, classes[label] if 0 <= label < len(classes) else label))
    return _fingerprint(dataset, root, resolved, classes, files)


def _segmentation_fingerprint(dataset: Any) -> dict[str, Any]:
    root = Path(dataset.root)
    resolved = root.resolve()
    files = []
    digests = getattr(dataset, "mask_digests", None) or [None] * len(dataset.cases)
    for case, images, mask, digest in zip(dataset.cases, dataset.image_paths, dataset.mask_paths, digests):
        for k, path in enumerate(images):
            files.append(_entry(path, resolved, f"{case}:image" + (f"_{k:04d}" if k else "")))
        if mask is not None:
            files.append(_entry(mask, resolved, f"{case}:mask" + (f":{digest}" if digest else "")))
    fp = _fingerprint(dataset, root, resolved, [str(c) for c in dataset.classes], files)
    fp["kind"] = "segmentation"
    return fp


def _regression_fingerprint(dataset: Any) -> dict[str, Any]:
    root = Path(dataset.root)
    resolved = root.resolve()
    names = [str(n) for n in dataset.target_names]
    files = []
    for path, values in zip(dataset.paths, np.asarray(dataset.targets, dtype=np.float64).tolist()):
        label = ",".join(f"{n}={v!r}" for n, v in zip(names, values))  # repr: exact, and short for 63.5
        files.append(_entry(path, resolved, label))
    fp = _fingerprint(dataset, root, resolved, names, files)
    fp["kind"] = "regression"
    return fp


def _entry(path, resolved: Path, label: Any) -> list:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{path} is listed by the dataset but does not exist: restore it or build the dataset again"
        ) from e
    return [relative_path(Path(path), resolved), size, label]


def _fingerprint(dataset: Any, root: Path, resolved: Path, classes: list[str], files: list) -> dict[str, Any]:
    files.sort(key=lambda f: (f[0], f[1], str(f[2])))
    return {
        "format": FORMAT,
        "root": str(root),
        "root_resolved": str(resolved),
        "n_files": len(files),
        "classes": classes,
        "labeled": bool(getattr(dataset, "labeled", True)),
        "files": files,
        "sha256": _digest(files),
    }


def relative_path(path: Path, root: Path) -> str:
    """`path` relative to the resolved `root` (posix, ".." where it lies outside), or absolute on another drive."""
    path = path.resolve()
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return path.as_posix()


def _digest(files: list) -> str:
    return hashlib.sha256(json.dumps(files, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class DataChange:
    """What differs between a recorded fingerprint and the current one (see `compare_fingerprints`).

    added, removed: relative paths. relabelled: (path, old label, new label); for a file moved from
    one class folder to another, the path is the one inside the class folder ("c.nii.gz"). resized:
    (path, old size, new size) in bytes. classes_changed: (old classes, new classes), or None when the same.
    moved: the root resolves elsewhere (roots: recorded and current resolved roots). `.same` is True
    when the files, sizes, labels and classes are all the same, moved or not.
    """

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    relabelled: tuple[tuple[str, Any, Any], ...] = ()
    resized: tuple[tuple[str, int, int], ...] = ()
    classes_changed: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    moved: bool = False
    roots: tuple[str, str] = ("", "")
    targets: bool = False  # a regression dataset's: labels are targets, classes the target columns

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.relabelled or self.resized or self.classes_changed)

    def __str__(self) -> str:
        parts = []
        if self.added:
            parts.append(_list(self.added, "file added", "files added"))
        if self.removed:
            parts.append(_list(self.removed, "removed", "removed"))
        if self.relabelled:
            parts.append(
                _list(
                    [f"{p}: {a} -> {b}" for p, a, b in self.relabelled],
                    *(
                        ("target changed", "targets changed")
                        if self.targets
                        else ("relabelled", "relabelled")
                    ),
                )
            )
        if self.resized:
            parts.append(_list([f"{p}: {a} -> {b} bytes" for p, a, b in self.resized], "resized", "resized"))
        if self.classes_changed:
            old, new = self.classes_changed
            parts.append(f"{'target columns' if self.targets else 'classes'} {list(old)} -> {list(new)}")
        text = ", ".join(parts) if parts else "same data"
        if self.moved:
            text += f" (root moved: {self.roots[0]} -> {self.roots[1]})"
        return text


def _list(items, one: str, many: str) -> str:
    shown = ", ".join(items[:SHOW]) + (f", ... {len(items) - SHOW} more" if len(items) > SHOW else "")
    return f"{len(items)} {one if len(items) == 1 else many} ({shown})"


def compare_fingerprints(recorded: dict[str, Any], current: dict[str, Any]) -> DataChange:
    """What changed from `recorded` to `current` (both from `data_fingerprint`, e.g. read back from JSON).

    >>> change = compare_fingerprints(run_record["data"], data_fingerprint(ds))   # doctest: +SKIP
    >>> if not change.same: raise ValueError(f"the data changed since the run started: {change}")  # doctest: +SKIP
    """
    for name, fp in (("recorded", recorded), ("current", current)):
        missing = [k for k in ("root_resolved", "classes", "files") if k not in (fp or {})]
        if missing or fp.get("format") != FORMAT:
            raise ValueError(
                f"the {name} fingerprint is not a data_fingerprint() dict (format {(fp or {}).get('format')!r}, "
                f"missing {missing}); record data_fingerprint(dataset) again"
            )
    old, new = _by_path(recorded["files"]), _by_path(current["files"])
    classes = (tuple(recorded["classes"]), tuple(current["classes"]))
    added = [p for p in new if p not in old]
    removed = [p for p in old if p not in new]
    relabelled = [(p, old[p][1], new[p][1]) for p in new if p in old and old[p][1] != new[p][1]]
    resized = [(p, old[p][0], new[p][0]) for p in new if p in old and old[p][0] != new[p][0]]
    # A file moved to another class folder is relabelled, not removed and added: its path inside
    # the class folder is the same, and each path's class folder is its label.
    gone = {_in_class(p, old[p][1]): p for p in removed if _in_class(p, old[p][1])}
    for p in list(added):
        inner = _in_class(p, new[p][1])
        if inner and inner in gone:
            q = gone.pop(inner)
            added.remove(p)
            removed.remove(q)
            relabelled.append((inner, old[q][1], new[p][1]))
            if old[q][0] != new[p][0]:
                resized.append((p, old[q][0], new[p][0]))
    return DataChange(
        added=tuple(added),
        removed=tuple(removed),
        relabelled=tuple(sorted(relabelled)),
        resized=tuple(sorted(resized)),
        classes_changed=classes if classes[0] != classes[1] else None,
        moved=recorded["root_resolved"] != current["root_resolved"],
        roots=(recorded["root_resolved"], current["root_resolved"]),
        targets="regression" in (recorded.get("kind"), current.get("kind")),
    )


def _in_class(path: str, label: Any) -> str | None:
    """The path inside its class folder when its first folder is its label (class-folder layout)."""
    head, _, rest = path.partition("/")
    return rest if rest and isinstance(label, str) and head == label else None


def _by_path(files: list) -> dict[str, tuple[int, Any]]:
    """relative path -> (size, label); a path listed k times is keyed "path (#k)" after the first."""
    out: dict[str, tuple[int, Any]] = {}
    for path, size, label in files:
        key, k = path, 1
        while key in out:
            k += 1
            key = f"{path} (#{k})"
        out[key] = (size, label)
    return out
