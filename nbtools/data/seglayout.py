"""Which image/mask pairs a segmentation folder holds: `images/` + `labels/` (or `masks/`), nnU-Net's raw
layout (see `nnunet`), or an `image,mask` CSV. A case is a file name without its extension (".nii.gz" is
one extension); problems are gathered and raised together (see `segcases`)."""

from __future__ import annotations

import csv as csv_module
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nbtools.data.nnunet import from_nnunet
from nbtools.data.segcases import (
    IMAGE_2D,
    LAYOUTS,
    SUFFIXES,
    SegCase,
    SegmentationDataError,
    fail,
    files_by_case,
    pairing,
    split_suffix,
)


@dataclass(frozen=True)
class Layout:
    """What `find_cases` found. kind: "images/labels", "images/masks", "nnunet" or "csv". classes: the
    label names from dataset.json (index = class id), or None. ndim: 2 (PNG/JPEG) or 3 (volumes)."""

    root: Path
    kind: str
    cases: list[SegCase]
    classes: list[str] | None
    ndim: int


def find_cases(root: str | Path, csv: str | Path | None = None, masks: str = "required") -> Layout:
    """The cases under `root` (a folder, or a CSV file). masks: "required" (training: every image has
    a mask) or "optional" (prediction: images without masks are read unlabelled)."""
    if masks not in ("required", "optional"):
        raise ValueError(f"masks must be 'required' or 'optional', got {masks!r}")
    root = Path(root)
    if csv is None and root.suffix.lower() == ".csv":
        root, csv = root.parent, root
    if csv is not None:
        csv = Path(csv) if Path(csv).is_file() or not (root / csv).is_file() else root / csv
        kind, cases, classes = "csv", _from_csv(csv, masks), None
    elif not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder or a CSV; " + LAYOUTS.format(root=root))
    elif (root / "imagesTr").is_dir() or (root / "dataset.json").is_file():
        kind, (cases, classes) = "nnunet", from_nnunet(root, masks)
    else:
        kind, cases, classes = _from_folders(root, masks)
    if not cases:
        raise SegmentationDataError(f"{csv or root} holds no cases; " + LAYOUTS.format(root=root))
    return Layout(root, kind, cases, classes, _ndim(cases, csv or root))


def select_cases(layout: Layout, names: Sequence[str]) -> list[SegCase]:
    """The cases called `names`, in that order (a run's record); unknown names are an error."""
    by_name = {c.name: c for c in layout.cases}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SegmentationDataError(
            f"{layout.root}: case{'s' * (len(unknown) > 1)} {unknown[:10]} not found ({len(by_name)} cases "
            f"there, e.g. {layout.cases[0].name!r}); restore the files or build the dataset without cases="
        )
    return [by_name[n] for n in names]


def _from_folders(root: Path, masks: str) -> tuple[str, list[SegCase], None]:
    images = root / "images"
    mask_dirs = [d for d in (root / "labels", root / "masks") if d.is_dir()]
    if not images.is_dir():
        raise SegmentationDataError(f"{root} has no images/ folder; " + LAYOUTS.format(root=root))
    if len(mask_dirs) > 1:
        raise SegmentationDataError(
            f"{root} has both labels/ and masks/: keep the masks in one of them (or remove the other)"
        )
    if not mask_dirs and masks == "required":
        raise SegmentationDataError(
            f"{root} has images/ but no labels/ (or masks/) folder: put one mask per image there, named as "
            f"its image (images/case_001.nii.gz -> labels/case_001.nii.gz); to predict on images without "
            f"masks, pass masks='optional'"
        )
    found = files_by_case(images)
    labels = files_by_case(mask_dirs[0]) if mask_dirs else {}
    kind = f"images/{mask_dirs[0].name}" if mask_dirs else "images/labels"
    problems = pairing(found, labels, masks, images, mask_dirs[0] if mask_dirs else None)
    fail(problems, root, "Each image needs a mask of the same name (and each mask an image).")
    cases = [SegCase(c, (p,), labels.get(c)) for c, p in sorted(found.items())]
    return kind, cases, None


def _from_csv(csv_path: Path, masks: str) -> list[SegCase]:
    if not csv_path.is_file():
        raise FileNotFoundError(f"CSV {csv_path} does not exist")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel starts its CSVs with a BOM
        reader = csv_module.DictReader(f)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "image" not in columns or ("mask" not in columns and masks == "required"):
            need = "image,mask" if masks == "required" else "image (and mask, if known)"
            raise SegmentationDataError(
                f"{csv_path} needs a header row with columns {need}; found {reader.fieldnames}"
            )
        reader.fieldnames = columns
        rows = list(enumerate(reader, start=2))  # row 1 is the header
    problems, cases, names = [], [], {}
    for n, row in rows:
        image, mask = (row.get("image") or "").strip(), (row.get("mask") or "").strip()
        if not image:
            problems.append(f"row {n}: empty image path")
            continue
        ipath = csv_path.parent / image
        mpath = csv_path.parent / mask if mask else None
        for what, path in (("image", ipath), ("mask", mpath)):
            if path is not None and not split_suffix(path)[1]:
                problems.append(f"row {n}: {what} {path.name} is not one of {', '.join(SUFFIXES)}")
        if not ipath.is_file():
            problems.append(f"row {n}: image {ipath} does not exist")
        if mpath is None and masks == "required":
            problems.append(f"row {n}: image {image} has no mask")
        elif mpath is not None and not mpath.is_file():
            problems.append(f"row {n}: mask {mpath} does not exist")
        case = split_suffix(ipath)[0] or Path(image).name
        if case in names:
            case = f"{case}@row{n}"  # two images of one name in different folders stay two cases
        names[case] = n
        cases.append(SegCase(case, (ipath,), mpath))
    if not rows:
        problems.append("a header but no rows; add one row per case: image,mask")
    fail(problems, csv_path, "Paths in the CSV are relative to the CSV's folder.")
    return cases


def _ndim(cases: list[SegCase], where: Path) -> int:
    """2 for PNG/JPEG images with PNG masks, 3 for volumes; a mix, or a JPEG mask, is an error."""
    problems, dims = [], set()
    for c in cases:
        kinds = {2 if split_suffix(p)[1] in IMAGE_2D else 3 for p in c.images}
        if c.mask is not None:
            suffix = split_suffix(c.mask)[1]
            if suffix in (".jpg", ".jpeg"):
                problems.append(
                    f"case {c.name!r}: mask {c.mask} is a JPEG, whose lossy compression blurs class "
                    f"ids into each other: save masks as PNG"
                )
            kinds.add(2 if suffix in IMAGE_2D else 3)
        if len(kinds) > 1:
            problems.append(f"case {c.name!r} mixes 2D (PNG/JPEG) and 3D (NIfTI/.npy) files")
        dims |= kinds
    if len(dims) > 1 and not problems:
        problems.append(
            "some cases are 2D images (PNG/JPEG), others 3D volumes (NIfTI/.npy): use one kind per dataset"
        )
    fail(problems, where, "2D: PNG/JPEG images with PNG masks; 3D: .nii.gz/.nii/.npy images and masks.")
    return dims.pop()
