"""Which files a folder dataset reads, and their labels: class sub-folders, a `path,label` CSV, or, for
prediction, unlabelled files (directly in a folder, or a CSV without a label column).

VolumeFolder and ImageFolder share these rules; only the file types and the words differ (`FileKind`).
Hidden files and folders (".ipynb_checkpoints", macOS "._x.png") are never read.
"""

from __future__ import annotations

import csv as csv_module
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

LABELS = ("required", "auto", "ignore")

LAYOUT = """expected layout, one folder per class (sorted names give labels 0, 1, ...):
    {root}/
        negative/{a}
        positive/{b}
  (files may sit in subfolders of a class folder; {suffixes}),
or pass csv= a file with a header row `path,label` (paths relative to root or to the CSV's folder, labels
0, 1, ... or class names); for unlabelled {noun}s to predict on, pass labels="auto" and put the files
directly in {root} (or leave the label column out of the CSV)"""


class FileKind(NamedTuple):
    """The files a dataset reads: `noun` for messages, lower-case `suffixes` (".nii.gz" is one), and two
    example file names for the layout text."""

    noun: str
    suffixes: tuple[str, ...]
    examples: tuple[str, str]

    def matches(self, path: str | Path) -> bool:
        return Path(path).name.lower().endswith(self.suffixes)


class Listing(NamedTuple):
    """What `list_files` found: `paths` and their `labels` (-1 each when not `labeled`), `classes` (the
    names of labels 0, 1, ...), and `root`, the folder the paths are relative to."""

    root: Path
    paths: list[Path]
    labels: list[int]
    classes: list[str]
    labeled: bool


def layout(kind: FileKind, root: Path) -> str:
    a, b = kind.examples
    return LAYOUT.format(root=root, a=a, b=b, suffixes=", ".join(kind.suffixes), noun=kind.noun)


def list_files(
    root: str | Path,
    csv: str | Path | None,
    kind: FileKind,
    labels: str = "required",
    classes: Sequence[str] | None = None,
) -> Listing:
    """The files of a folder dataset and their labels (see VolumeFolder for the rules).

    root: a folder, or a .csv file (then csv=None, and root becomes the CSV's folder). labels:
    "required" (class folders or a label column, else an error showing the layout), "auto" (labelled
    when the source has labels, unlabelled when the files sit directly in root or the CSV has no label
    column) or "ignore" (every file under root, or the CSV's paths, unlabelled). classes: pin the class
    names (label i is classes[i]); a class folder or CSV label outside them is an error.
    """
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {', '.join(map(repr, LABELS))}, got {labels!r}")
    pinned = _pinned(classes)
    root = Path(root)
    if csv is None and root.suffix.lower() == ".csv":
        root, csv = root.parent, root
    if csv is not None:
        paths, labs, names, labeled = _read_csv(root, Path(csv), kind, labels, pinned)
    else:
        paths, labs, names, labeled = _scan(root, kind, labels, pinned)
    if not labeled:
        labs, names = [-1] * len(paths), list(pinned or [])
    return Listing(root, paths, labs, names, labeled)


def _pinned(classes: Sequence[str] | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str) or not all(isinstance(c, str) and c for c in classes):
        raise ValueError(f"classes must be a list of class names (non-empty strings), got {classes!r}")
    dup = [c for c, k in Counter(classes).items() if k > 1]
    if dup or not classes:
        raise ValueError(f"classes must name each class once, got {list(classes)!r}")
    return list(classes)


def _visible(path: Path, under: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(under).parts)


def files_of(folder: Path, kind: FileKind) -> list[Path]:
    """Every `kind` file under `folder`, in subfolders too, sorted; hidden ones left out."""
    return sorted(p for p in folder.rglob("*") if kind.matches(p) and _visible(p, folder) and p.is_file())


def _scan(root: Path, kind: FileKind, labels: str, pinned: list[str] | None):
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; " + layout(kind, root))
    if labels == "ignore":
        files = files_of(root, kind)
        if not files:
            raise ValueError(f"{root} holds no {'/'.join(kind.suffixes)} files, in it or its subfolders")
        return files, [], [], False
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    per = {d: files_of(d, kind) for d in subdirs}
    loose = sorted(
        p for p in root.iterdir() if p.is_file() and kind.matches(p) and not p.name.startswith(".")
    )
    if labels == "auto" and loose and not any(per.values()):
        return loose, [], [], False
    if not subdirs:
        hint = (
            f" (it holds {len(loose)} {kind.noun} files directly, e.g. {loose[0].name}: move them into "
            f"class folders, or pass labels='auto' to read them unlabelled, for prediction)"
            if loose
            else ""
        )
        raise ValueError(f"{root} has no class subfolders{hint}; " + layout(kind, root))
    empty = [d for d in subdirs if not per[d]]
    if empty:
        others = Counter(
            "".join(p.suffixes) or p.name for d in empty for p in d.rglob("*") if p.is_file()
        ).most_common(3)
        found = f" (found {', '.join(f'{n} {s}' for s, n in others)})" if others else " (empty)"
        raise ValueError(
            f"class folder{'s' if len(empty) > 1 else ''} {', '.join(str(d) for d in empty)} "
            f"hold{'s' if len(empty) == 1 else ''} no {'/'.join(kind.suffixes)} files{found}; "
            + layout(kind, root)
        )
    if loose:
        log.warning(
            "%s: %d %s files directly in the folder (e.g. %s) are not in a class folder and are not read",
            root,
            len(loose),
            kind.noun,
            loose[0].name,
        )
    names = [d.name for d in subdirs]
    if pinned is not None:
        odd = [n for n in names if n not in pinned]
        if odd:
            raise ValueError(
                f"class folder{'s' * (len(odd) > 1)} {', '.join(str(root / n) for n in odd)} "
                f"{'are' if len(odd) > 1 else 'is'} not among the classes {pinned} (classes= pins them, "
                f"e.g. to a training run's); rename or remove {'them' if len(odd) > 1 else 'it'}"
            )
    index = {n: i for i, n in enumerate(pinned or names)}
    paths = [p for d in subdirs for p in per[d]]
    labs = [index[d.name] for d in subdirs for _ in per[d]]
    return paths, labs, list(pinned or names), True


def _read_csv(root: Path, csv_path: Path, kind: FileKind, labels: str, pinned: list[str] | None):
    if not csv_path.is_file() and (root / csv_path).is_file():
        csv_path = root / csv_path
    if not csv_path.is_file():
        raise FileNotFoundError(f"CSV {csv_path} does not exist")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel starts its CSVs with a BOM
        reader = csv_module.DictReader(f)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        labeled = "label" in columns and labels != "ignore"
        if "path" not in columns or (labels == "required" and not labeled):
            need = "path,label" if labels == "required" else "path (and label, if known)"
            raise ValueError(f"{csv_path} needs a header row with columns {need}; found {reader.fieldnames}")
        reader.fieldnames = columns
        rows = list(enumerate(reader, start=2))  # row 1 is the header
    if not rows:
        raise ValueError(f"{csv_path} has a header but no rows; add one row per {kind.noun}: path,label")
    paths, raw, bad, seen, repeated = [], [], [], {}, []
    for n, row in rows:
        rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        path = _locate(rel, root, csv_path.parent)
        key = os.path.normpath(path)
        if not rel:
            bad.append(f"row {n}: empty path")
        elif not kind.matches(path):
            bad.append(f"row {n}: {rel} is not a {'/'.join(kind.suffixes)} file")
        elif not path.is_file():
            also = csv_path.parent / rel
            nor = f" (nor {also})" if not Path(rel).is_absolute() and also != path else ""
            bad.append(f"row {n}: file {path} does not exist{nor}")
        label_kind = _label_kind(label) if labeled else "none"
        if labeled:
            if label_kind not in ("int", "name"):
                bad.append(f"row {n}: {label_kind}")
            elif pinned is not None and label_kind == "name" and label not in pinned:
                bad.append(f"row {n}: label {label!r} is not among the classes {pinned}")
            elif pinned is not None and label_kind == "int" and int(label) >= len(pinned):
                bad.append(f"row {n}: label {label} is not an index of the {len(pinned)} classes {pinned}")
            raw.append((n, label, label_kind))
        if key in seen:
            first, first_label = seen[key]
            if labeled and label_kind in ("int", "name") and first_label not in (None, label):
                bad.append(f"row {n}: {rel} is labelled {label!r} here and {first_label!r} in row {first}")
            else:
                repeated.append(n)
        else:
            seen[key] = (n, label if label_kind in ("int", "name") else None)
        paths.append(path)
    numeric = [(n, lab) for n, lab, k in raw if k == "int"]
    names = [(n, lab) for n, lab, k in raw if k == "name"]
    if numeric and names:
        odd = names if len(names) <= len(numeric) else numeric
        rows_odd = ", ".join(str(n) for n, _ in odd[:5])
        bad.append(f"rows {rows_odd}: labels mix numbers and class names (e.g. {odd[0][1]!r}); use one kind")
    if bad:
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(
            f"{csv_path}: {len(bad)} bad row{'s' * (len(bad) > 1)}:\n  " + "\n  ".join(bad[:10]) + more
        )
    if repeated:  # the same file twice with one label weighs it twice: maybe meant, surely worth a word
        log.warning("%s: rows %s list a file a second time", csv_path, ", ".join(map(str, repeated[:10])))
    if not labeled:
        return paths, [], [], False
    if numeric:
        labs = [int(lab) for _, lab, _ in raw]
        classes = pinned or [str(i) for i in range(max(labs) + 1)]
    else:
        classes = pinned or sorted({lab for _, lab, _ in raw})
        labs = [classes.index(lab) for _, lab, _ in raw]
    return paths, labs, classes, True


def _locate(rel: str, root: Path, csv_dir: Path) -> Path:
    """A CSV path: absolute as is; relative under root, else under the CSV's folder (root wins)."""
    p = Path(rel)
    if p.is_absolute() or (root / p).is_file():
        return p if p.is_absolute() else root / p
    return csv_dir / p if (csv_dir / p).is_file() else root / p


def _label_kind(label: str) -> str:
    """ "int" (0, 1, ...), "name" (a class name), or what is wrong with the label."""
    if not label:
        return "empty label"
    if re.fullmatch(r"[+-]?\d+", label):
        return "int" if int(label) >= 0 else f"label {label} is negative; use 0, 1, ... or class names"
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+)(e[+-]?\d+)?|[+-]?(nan|inf)", label, flags=re.IGNORECASE):
        return f"label {label!r} is not a whole number or a class name"
    return "name"
