"""A segmentation case (its image files, one per channel, and its mask file), the file names we read, and
the way problems are gathered: every problem found while pairing images with masks is collected and
raised together as one SegmentationDataError naming each case and file, so a user fixes them all at
once instead of one per run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbtools.data.volumes import VOLUME_SUFFIXES

IMAGE_2D = (".png", ".jpg", ".jpeg")
SUFFIXES = tuple(sorted(VOLUME_SUFFIXES + IMAGE_2D, key=len, reverse=True))  # ".nii.gz" before ".gz"
SHOW = 10  # problems listed in one message

LAYOUTS = """a segmentation folder is one of:
    {root}/images/case_001.nii.gz  +  {root}/labels/case_001.nii.gz   (or masks/; PNG/JPEG images with PNG masks)
    {root}/imagesTr/case_001_0000.nii.gz  +  {root}/labelsTr/case_001.nii.gz  (+ dataset.json: nnU-Net's raw layout)
    a CSV with a header `image,mask` (paths relative to the CSV)"""


class SegmentationDataError(ValueError):
    """Bad segmentation input, found before training; the message names each case and file and the fix."""


@dataclass(frozen=True)
class SegCase:
    """One case: its name, its image file per channel, and its mask file (None when unlabelled)."""

    name: str
    images: tuple[Path, ...]
    mask: Path | None


def split_suffix(path: str | Path) -> tuple[str, str]:
    """(case name, suffix) of a file; ".nii.gz" is one suffix. ("", "") for a file type we do not read."""
    name = Path(path).name
    low = name.lower()
    suffix = next((s for s in SUFFIXES if low.endswith(s)), "")
    return (name[: -len(suffix)], suffix) if suffix else ("", "")


def fail(problems: list[str], where: Path, fix: str) -> None:
    if problems:
        more = f"\n  ... and {len(problems) - SHOW} more" if len(problems) > SHOW else ""
        raise SegmentationDataError(
            f"{where}: {len(problems)} problem{'s' * (len(problems) > 1)}:\n  "
            + "\n  ".join(problems[:SHOW])
            + more
            + f"\n{fix}"
        )


def files_by_case(folder: Path) -> dict[str, Path]:
    """case name -> file, for the readable files directly in `folder` (hidden ones left out)."""
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        case, suffix = split_suffix(p)
        if suffix and p.is_file() and not p.name.startswith("."):
            found.setdefault(case, []).append(p)
    twice = [
        f"case {c!r} has {len(ps)} files: {', '.join(p.name for p in ps)}"
        for c, ps in found.items()
        if len(ps) > 1
    ]
    fail(twice, folder, "Keep one file per case (a case is its file name without the extension).")
    return {c: ps[0] for c, ps in found.items()}


def pairing(images: dict, labels: dict, masks: str, image_dir: Path, mask_dir: Path | None) -> list[str]:
    problems = []
    if masks == "required":
        problems += [
            f"image {p} has no mask in {mask_dir}/" for c, p in sorted(images.items()) if c not in labels
        ]
    problems += [
        f"mask {p} has no image in {image_dir}/" for c, p in sorted(labels.items()) if c not in images
    ]
    return problems
