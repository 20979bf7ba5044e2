"""Real files as a user has them: NIfTI volumes (nibabel, with an affine) and PNG images (PIL), in
class folders or listed in a `path,label` CSV. The positives carry a bright blob, so a model can learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])  # anisotropic voxels, as scanners write them


def _volume(rng: np.random.Generator, shape, positive: bool) -> np.ndarray:
    vol = rng.normal(100.0, 20.0, size=shape).astype(np.float32)  # scanner-like units, not z-scored
    if positive:
        d, h, w = (s // 2 for s in shape)
        vol[d - 2 : d + 2, h - 2 : h + 2, w - 2 : w + 2] += 120.0
    return vol


def write_nifti_folder(
    root: Path, n: dict[str, int] | None = None, shape=(10, 10, 10), seed: int = 0
) -> Path:
    """root/<class>/case_XXX.nii.gz, n files per class (default benign 8, malignant 6)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    for c, (name, k) in enumerate((n or {"benign": 8, "malignant": 6}).items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(k):
            img = nib.Nifti1Image(_volume(rng, shape, positive=c == 1), AFFINE)
            nib.save(img, root / name / f"case_{c}{i:02d}.nii.gz")
    return root


def write_nifti_csv(root: Path, n: int = 12, shape=(10, 10, 10), seed: int = 0) -> Path:
    """root/scans/scan_XX.nii (flat) and root/labels.csv with path,label (class names)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    (root / "scans").mkdir(parents=True, exist_ok=True)
    rows = ["path,label"]
    for i in range(n):
        label = "lesion" if i % 3 == 0 else "clear"
        img = nib.Nifti1Image(_volume(rng, shape, positive=label == "lesion"), AFFINE)
        nib.save(img, root / "scans" / f"scan_{i:02d}.nii")
        rows.append(f"scans/scan_{i:02d}.nii,{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def write_png_folder(root: Path, n: dict[str, int] | None = None, size: int = 20, seed: int = 0) -> Path:
    """root/<class>/page_XXX.png, RGB at size x size + a few pixels (the job resizes them)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, (name, k) in enumerate((n or {"authentic": 10, "forged": 6}).items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(k):
            page = rng.integers(180, 255, size=(size + 3, size, 3), dtype=np.uint8)
            if c == 1:
                page[4:10, 4:10] = (200, 20, 20)
            Image.fromarray(page).save(root / name / f"page_{c}{i:02d}.png")
    return root
