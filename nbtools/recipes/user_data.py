"""The user's own data for a recipe: a folder or `path,label` CSV, and a second one for validation or a
stratified hold-out of the first; the class order (the positive class of a binary task is label 1);
and what the run records of it (`meta["data"]`), so a resume rebuilds exactly that data.

meta["data"] = {"source": {"data", "data_resolved", "val", "val_resolved"} (paths as given and resolved),
"classes": [...] (label i is classes[i]), "positive": the positive class (binary) or None,
"split": {"kind": "holdout", "fraction", "seed", "n_train", "n_val", "val_sha256"} or {"kind": "folder",
"n_train", "n_val"}, "fingerprint": {"train": data_fingerprint(...), "val": ... or None}, "file_check":
{"key", "n_files"} (every file read before training: Job.check_files)}; a resume that found the folder
moved or was allowed changed data appends to "moves" / "changes" (see data_check).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from nbtools.data import data_fingerprint, holdout_split
from nbtools.wording import reword

VAL_FRACTION = 0.2  # the hold-out's share when no validation folder is given


@dataclass
class UserData:
    """The folders as read (`folder`: of `data`; `val_folder`: of `val`, None for a hold-out), the
    training and validation parts of them, and the record for the run's meta["data"]."""

    folder: Dataset
    val_folder: Dataset | None
    train: Dataset
    val: Dataset
    record: dict[str, Any]

    @property
    def folders(self) -> tuple[Dataset, ...]:
        """Every folder read: the data's, and the validation folder's when given."""
        return (self.folder,) if self.val_folder is None else (self.folder, self.val_folder)

    @property
    def classes(self) -> list[str]:
        return self.record["classes"]

    @property
    def train_labels(self) -> np.ndarray:
        labels = np.asarray(self.folder.labels)
        return labels[self.train.indices] if isinstance(self.train, Subset) else labels


def class_order(found: list[str], positive: str | None, where: str) -> tuple[list[str], str | None]:
    """The classes in label order and the positive class. Two classes: the positive one (by default the
    second in sorted order) is label 1, the other label 0; more classes: sorted, and positive must be None."""
    if len(found) < 2:
        raise ValueError(
            f"{where} has {len(found)} class ({found}); a classifier needs at least two: add a class folder "
            f"(or rows with another label to the CSV)"
        )
    if len(found) > 2:
        if positive is not None:
            raise ValueError(
                f"positive={positive!r} names the positive class of a two-class task; {where} has "
                f"{len(found)} classes {found}: leave positive=None"
            )
        return list(found), None
    pos = sorted(found)[1] if positive is None else str(positive)
    if pos not in found:
        raise ValueError(f"positive={positive!r} is not one of the classes {sorted(found)} of {where}")
    return [c for c in found if c != pos] + [pos], pos


def _resolved(path: str | Path | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def index_digest(idx: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()


def build_user_data(
    open_folder: Callable[[str | Path, list[str] | None], Dataset],
    data: str | Path,
    val: str | Path | None,
    positive: str | None,
    fraction: float,
    seed: int,
    recipe: str = "",
    two_classes: bool = False,
) -> UserData:
    """Read `data` (and `val`) with open_folder(path, classes) -> a VolumeFolder / ImageFolder, order the
    classes (see class_order; `val` is pinned to them; `two_classes`: exactly two, or an error naming
    `recipe`) and split: `val` given, it is the validation set;
    None, a stratified hold-out of `fraction` of `data` with `seed` (nbt.data.holdout_split)."""
    folder = open_folder(data, None)
    classes, pos = class_order([str(c) for c in folder.classes], positive, str(data))
    if two_classes and len(classes) != 2:
        raise ValueError(
            f"{recipe} is a two-class recipe (one logit, Focal Loss); {data} has {len(classes)} classes "
            f"{classes}: keep two class folders (or two labels in the CSV)"
        )
    if classes != list(folder.classes):  # the positive class becomes label 1
        folder = open_folder(data, classes)
    if val is None:
        tr, va = holdout_split(np.asarray(classes)[folder.labels], fraction, seed)  # names in messages
        train, val_part, val_folder = Subset(folder, tr.tolist()), Subset(folder, va.tolist()), None
        split = {"kind": "holdout", "fraction": fraction, "seed": seed, "val_sha256": index_digest(va)}
    else:
        val_folder = open_folder(val, classes)
        train, val_part, split = folder, val_folder, {"kind": "folder"}
    split.update(n_train=len(train), n_val=len(val_part))
    record = {
        "source": {
            "data": str(data),
            "data_resolved": _resolved(data),
            "val": None if val is None else str(val),
            "val_resolved": _resolved(val),
        },
        "classes": classes,
        "positive": pos,
        "split": split,
        "fingerprint": {
            "train": data_fingerprint(folder),
            "val": None if val_folder is None else data_fingerprint(val_folder),
        },
    }
    return UserData(folder, val_folder, train, val_part, record)


def _counts(fp: dict[str, Any]) -> str:
    counts = Counter(label for _, _, label in fp["files"])
    return ", ".join(f"{c} {counts.get(c, 0)}" for c in fp["classes"])


def _targets(t: dict[str, Any]) -> str:
    columns = zip(t["names"], t["mean"], t["std"], t["min"], t["max"])
    return "targets (training part): " + "; ".join(
        f"{n} mean {m:.4g}, std {s:.3g}, range {lo:.4g} to {hi:.4g}" for n, m, s, lo, hi in columns
    )


def describe_data(record: dict[str, Any]) -> str:
    """One paragraph on a run's data (its meta["data"]): where from, classes (or a regression run's
    targets, a segmentation run's cases), positive class, split."""
    if record.get("kind") == "segmentation":
        return describe_seg_data(record)
    src, fp, split = record["source"], record["fingerprint"], record["split"]
    regression = record.get("task") == "regression"  # a CSV of targets (recipes.regression_data)

    def files(part: str) -> str:
        return f"{fp[part]['n_files']} files" + ("" if regression else f": {_counts(fp[part])}")

    lines = [f"data: {src['data']} ({files('train')})"]
    pos, classes = record["positive"], record["classes"]
    if regression:
        lines.append(_targets(record["targets"]))
    elif pos is not None:
        default = pos == sorted(classes)[1]
        why = "the second in sorted order; positive= picks the other" if default else "chosen by positive="
        lines.append(f"positive class: {pos!r} (label 1; {why}), negative: {classes[0]!r} (label 0)")
    else:
        lines.append(f"classes: {', '.join(f'{i} {c}' for i, c in enumerate(classes))}")
    if split["kind"] == "holdout":
        lines.append(
            f"validation: a{'' if regression else ' stratified'} {split['fraction']:.0%} hold-out of it "
            f"(seed {split['seed']}): {split['n_train']} train, {split['n_val']} val"
        )
    else:
        lines.append(f"validation: {src['val']} ({files('val')})")
    return "\n".join(lines)


def describe_seg_data(record: dict[str, Any]) -> str:
    """One paragraph on a segmentation run's data: where from, layout, cases, classes, split."""
    src, fp, split = record["source"], record["fingerprint"], record["split"]
    n_cases = split["n_train"] + (split["n_val"] if split["kind"] == "holdout" else 0)
    channels = record["channels"]
    lines = [
        f"data: {src['data']} ({record['layout']}, {n_cases} cases, {record['ndim']}D, "
        f"{channels} image channel{'s' * (channels != 1)}, {fp['train']['n_files']} files)",
        "classes: " + ", ".join(f"{i} {c}" for i, c in enumerate(record["classes"])),
    ]
    if split["kind"] == "holdout":
        lines.append(
            f"validation: a {split['fraction']:.0%} hold-out of the cases (seed {split['seed']}): "
            f"{split['n_train']} train, {split['n_val']} val, predicted whole by sliding window"
        )
    else:
        lines.append(f"validation: {src['val']} ({split['n_val']} cases, predicted whole by sliding window)")
    return "\n".join(lines)


def say(text: str) -> None:
    """Print what a recipe found about the data, once: under torchrun only rank 0 prints."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(reword(text))  # options as the reader sets them (nbtools.wording)
