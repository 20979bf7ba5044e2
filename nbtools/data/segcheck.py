"""The checks a segmentation folder passes before any training: every image channel and its mask agree in
shape and affine, every mask holds whole class ids inside the classes, every case has the same number of
channels. Masks are read in full (their values are the point); images by their headers only.

All problems of all cases are collected and raised as one SegmentationDataError, naming each case and
file and the fix, so a user repairs a folder in one pass. What the scan learns (shapes, affines, voxels
per class) stays with the dataset: the run record, the foreground statistics and the doctor use it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nbtools.data.segcases import SHOW, SegCase, SegmentationDataError
from nbtools.data.segread import describe_affine, header, image_channels, read_mask, same_affine

log = logging.getLogger(__name__)


@dataclass
class CaseFacts:
    """Per case: spatial shape, affine (3D NIfTI; else None), voxels per class id (int64, one row per
    case, one column per class), a digest of the mask's class ids (None without a mask: what the data
    fingerprint compares, so a mask edited at the same file size is a change); and the dataset's
    channel count and class names."""

    shapes: list[tuple[int, ...]]
    affines: list[np.ndarray | None]
    class_voxels: np.ndarray
    mask_digests: list[str | None]
    channels: int
    classes: list[str]


def scan_cases(cases: Sequence[SegCase], classes: list[str] | None, where: Path) -> CaseFacts:
    """Check every case (see the module docstring); classes None: inferred as 0..max id found, named
    "background", "class_1", ...; SegmentationDataError listing every problem found."""
    problems: list[str] = []
    shapes, affines, counts, digests, channels = [], [], [], [], {}
    for case in cases:
        shape, affine, count, digest = _check_case(case, classes, problems)
        shapes.append(shape)
        affines.append(affine)
        counts.append(count)
        digests.append(digest)
        channels.setdefault(image_channels(case.images), []).append(case.name)
    if len(channels) > 1:
        by = "; ".join(
            f"{n} channel{'s' * (n > 1)}: {', '.join(names[:3])}" for n, names in sorted(channels.items())
        )
        problems.append(f"cases differ in their number of image channels ({by})")
    if classes is None:
        classes = _inferred_classes(counts, cases, problems)
    _raise(problems, where)
    width = len(classes)
    table = np.zeros((len(cases), width), dtype=np.int64)
    for i, c in enumerate(counts):
        table[i, : len(c)] = c[:width]
    n_channels = next(iter(channels)) if channels else 0
    return CaseFacts(shapes, affines, table, digests, n_channels, list(classes))


def _check_case(case: SegCase, classes: list[str] | None, problems: list[str]):
    """(shape, affine, voxels per class id, mask digest) of one case; problems appended to `problems`."""
    try:
        heads = [header(p) for p in case.images]
    except (OSError, ValueError) as e:
        problems.append(f"case {case.name!r}: {e}")
        return None, None, np.zeros(0, np.int64), None
    shape, affine = heads[0]
    for p, (s, a) in zip(case.images[1:], heads[1:]):
        if s != shape:
            problems.append(
                f"case {case.name!r}: channel {p.name} is {s}, channel {case.images[0].name} is {shape}"
            )
        elif not same_affine(affine, a):
            problems.append(
                f"case {case.name!r}: channel {p.name} ({describe_affine(a)}) and {case.images[0].name} "
                f"({describe_affine(affine)}) are not on the same grid"
            )
    if case.mask is None:
        return shape, affine, np.zeros(0, np.int64), None
    try:
        mask = read_mask(case.mask)
        _, mask_affine = header(case.mask) if affine is not None else (None, None)
    except (OSError, ValueError) as e:
        problems.append(f"case {case.name!r}: {e}")
        return shape, affine, np.zeros(0, np.int64), None
    if mask.shape != shape:
        problems.append(
            f"case {case.name!r}: image {case.images[0].name} is {shape} but mask {case.mask.name} is "
            f"{mask.shape}: the mask must cover the image voxel for voxel (resample it to the image's grid "
            f"with nearest-neighbour)"
        )
    elif not same_affine(affine, mask_affine):
        problems.append(
            f"case {case.name!r}: image {case.images[0].name} ({describe_affine(affine)}) and mask "
            f"{case.mask.name} ({describe_affine(mask_affine)}) have different affines: they are not on the "
            f"same grid (resample the mask onto the image with nearest-neighbour, or fix the header)"
        )
    count = np.bincount(mask.ravel())
    if classes is not None and len(count) > len(classes):
        odd = (np.flatnonzero(count[len(classes) :]) + len(classes)).tolist()
        problems.append(
            f"case {case.name!r}: mask {case.mask} holds class id{'s' * (len(odd) > 1)} {odd[:5]}, outside "
            f"the {len(classes)} classes {classes} (ids 0..{len(classes) - 1}); fix the mask, or name every "
            f"class (classes=, or dataset.json's labels)"
        )
    ids = mask.astype(np.uint8) if len(count) <= 256 else mask  # 8x less to hash for the usual mask
    digest = hashlib.sha256(np.ascontiguousarray(ids).tobytes() + str(mask.shape).encode()).hexdigest()[:16]
    return shape, affine, count, digest


def _inferred_classes(counts: list[np.ndarray], cases: Sequence[SegCase], problems: list[str]) -> list[str]:
    """0..max id found, named background, class_1, ...; masks of only 0 and 255 are a mistake, named."""
    labelled = [(c, k) for c, k in zip(cases, counts) if c.mask is not None and len(k)]
    if not labelled:
        return ["background"]
    seen = set()
    for _, k in labelled:
        seen |= set(np.flatnonzero(k).tolist())
    if seen and seen <= {0, 255} and 255 in seen:
        case = next(c for c, k in labelled if len(k) > 255 and k[255])
        problems.append(
            f"the masks hold only the values 0 and 255 (e.g. case {case.name!r}, {case.mask}): a binary mask "
            f"saved black and white; class ids must be 0 and 1. Save them as 0/1 (e.g. "
            f"`Image.fromarray((np.array(Image.open(p)) > 127).astype(np.uint8)).save(p)`)"
        )
    top = max(seen)
    absent = sorted(set(range(1, top + 1)) - seen)
    if absent:
        log.warning(
            "class id%s %s appear in no mask (ids found: %s)",
            "s" * (len(absent) > 1),
            absent[:10],
            sorted(seen),
        )
    return ["background"] + [f"class_{i}" for i in range(1, top + 1)]


def _raise(problems: list[str], where: Path) -> None:
    if problems:
        more = f"\n  ... and {len(problems) - SHOW} more" if len(problems) > SHOW else ""
        raise SegmentationDataError(
            f"{where}: {len(problems)} case problem{'s' * (len(problems) > 1)}:\n  "
            + "\n  ".join(problems[:SHOW])
            + more
            + "\nFix or remove those cases; every image needs a mask on the same grid holding class ids."
        )


def pinned_classes(pinned: Sequence[str] | None, from_json: list[str] | None, root) -> list[str] | None:
    """The classes= argument checked against dataset.json's labels (None: those, or None to infer)."""
    if pinned is None:
        return from_json
    if isinstance(pinned, str) or len(pinned) < 2 or not all(isinstance(c, str) and c for c in pinned):
        raise ValueError(f"classes must name at least 2 classes (background first), got {pinned!r}")
    if len(set(pinned)) != len(pinned):
        raise ValueError(f"classes must name each class once, got {list(pinned)!r}")
    if from_json is not None and list(pinned) != from_json:
        raise SegmentationDataError(
            f"classes={list(pinned)} differs from the labels of {root}/dataset.json {from_json}; "
            f"leave classes= out to use dataset.json's, or fix dataset.json"
        )
    return list(pinned)
