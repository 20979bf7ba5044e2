"""`SegPredictions`: what `nbt.predict` returns for a segmentation run, one mask per case, and how the
masks and the per-case table are written.

A mask is written as its image was: a NIfTI mask keeps the image's affine and header (spacing,
orientation, qform/sform codes), stored as uint8 class ids without intensity scaling, so a viewer lays it
over the scan; a .npy image gets a .npy mask; a PNG/JPEG image a grey PNG whose values are the class ids,
at the image's own size. The table has one row per case: the mask file, and per foreground class the
predicted voxels, their volume in ml (from the NIfTI affine, mm units) and, when the case had a mask,
the Dice against it (NaN where the mask has none of that class: MONAI's ignore_empty).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nbtools.atomic import replace_atomic
from nbtools.data.segcases import split_suffix
from nbtools.viz import mask_overlays

TABLE = "cases.csv"  # the per-case table save() writes beside the masks


@dataclass
class SegPredictions:
    """Per-case masks of a segmentation model on a folder of images.

    cases: case names; images: the (first channel's) image file of each case; masks: (*spatial) uint8
    class ids at the image's own size; classes: the class names (index = id, background first); rows:
    one dict per case (case_summary: voxels_<class>, ml_<class> for NIfTI, dice_<class> when the case has
    a mask); tta, weights: how the masks were made ("best", "best_ema" or "last").

    >>> masks = nbt.predict("runs/seg", "new_scans", tta=True)   # doctest: +SKIP
    >>> masks.save("masks/")        # masks/case_001.nii.gz ... and masks/cases.csv  # doctest: +SKIP
    """

    cases: list[str]
    images: list[Path]
    masks: list[np.ndarray]
    classes: list[str]
    rows: list[dict[str, object]]
    tta: bool = False
    weights: str | None = None
    truths: list[Path | None] = field(default_factory=list)  # each case's own mask file, if it had one
    written: dict[str, Path] = field(default_factory=dict)  # case -> its mask file, after save()

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def labelled(self) -> bool:
        """True when every case had a mask to compare with (dice_<class> in every row)."""
        return bool(self.rows) and all(any(k.startswith("dice_") for k in r) for r in self.rows)

    def dice(self) -> dict[str, float]:
        """Mean Dice over the cases with a mask, per foreground class and overall (`dice`: the mean over
        cases of each case's mean over its defined classes, as val_dice). NaN values are left out."""
        keys = sorted({k for r in self.rows for k in r if k.startswith("dice_")})
        if not keys:
            raise ValueError("no case had a mask to compare with; dice needs labelled cases")
        table = np.array([[float(r.get(k, math.nan)) for k in keys] for r in self.rows], dtype=np.float64)
        defined = ~np.isnan(table)
        per_case = np.where(defined, table, 0.0).sum(1) / np.maximum(defined.sum(1), 1)
        per_case = per_case[defined.any(1)]
        out = {"dice": float(per_case.mean()) if per_case.size else math.nan}
        for j, k in enumerate(keys):
            col = table[defined[:, j], j]
            out[k] = float(col.mean()) if col.size else math.nan
        return out

    def case_dice(self) -> np.ndarray:
        """(N,) each case's mean Dice over its defined foreground classes (NaN: no mask, or none defined)."""
        out = []
        for r in self.rows:
            values = [float(v) for k, v in r.items() if k.startswith("dice_") and not math.isnan(float(v))]
            out.append(float(np.mean(values)) if values else math.nan)
        return np.asarray(out, dtype=np.float64)

    def show(self, n: int = 2):
        """A figure of the `n` best and `n` worst cases by Dice (the first 2n without masks), each with its
        image, true mask and predicted mask laid over it (nbt.viz.mask_overlays)."""
        from nbtools.data.segread import read_image, read_mask

        dice = self.case_dice()
        known = np.flatnonzero(~np.isnan(dice))
        if known.size:
            order = known[np.argsort(-dice[known], kind="stable")]
            picked = list(dict.fromkeys([*order[:n], *order[::-1][:n][::-1]]))
        else:
            picked = list(range(min(2 * n, len(self))))
        cases, titles = [], []
        for i in picked:
            truth_path = self.truths[i] if i < len(self.truths) else None
            truth = read_mask(truth_path) if truth_path is not None else None
            image = read_image((self.images[i],))  # 3D (1, D, H, W); 2D RGB (H, W, 3)
            cases.append((image, truth, self.masks[i]))
            titles.append(self.cases[i] + ("" if math.isnan(dice[i]) else f": Dice {dice[i]:.3f}"))
        return mask_overlays(cases, titles)

    def save(self, out_dir: str | Path) -> Path:
        """Write one mask per case into `out_dir` (named as its image; see the module docstring) and the
        table `out_dir/cases.csv`; each file atomically. Returns the table's path."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for case, image, mask in zip(self.cases, self.images, self.masks):
            self.written[case] = write_mask(mask, image, out_dir / case)
        return self.to_csv(out_dir / TABLE)

    def to_csv(self, path: str | Path) -> Path:
        """The per-case table as CSV (case, image, mask (after save), voxels_/ml_/dice_<class>); an empty
        cell for a NaN Dice (no such structure in the case's mask). Returns the path."""
        rows = [
            {"case": c, "image": str(i), "mask": str(self.written.get(c, "")), **r}
            for c, i, r in zip(self.cases, self.images, self.rows)
        ]
        columns = list(dict.fromkeys(k for r in rows for k in r)) or ["case", "image", "mask"]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        return replace_atomic(path, lambda f: f.write(text.getvalue().encode("utf-8")))

    def __repr__(self) -> str:
        extra = f", {self.weights} weights" if self.weights else ""
        extra += ", TTA" if self.tta else ""
        if self.labelled:
            extra += f", mean Dice {self.dice()['dice']:.4f} on the cases' masks"
        return f"SegPredictions({len(self)} cases, classes {self.classes}{extra})"


def _cell(v: object) -> object:
    if isinstance(v, float):
        return "" if math.isnan(v) else format(v, ".8g")
    return v


def write_mask(mask: np.ndarray, image: Path, stem: Path) -> Path:
    """Write `mask` as `stem` + the image's kind of file (see the module docstring); returns the path."""
    suffix = split_suffix(image)[1]
    ids = np.ascontiguousarray(mask, dtype=np.uint8)
    if suffix in (".nii", ".nii.gz"):
        import nibabel as nib

        ref = nib.load(str(image))
        out = nib.Nifti1Image(ids, ref.affine, ref.header.copy())
        out.set_data_dtype(np.uint8)
        out.header.set_slope_inter(1.0, 0.0)  # class ids as stored, never rescaled
        out.set_qform(*ref.get_qform(coded=True))
        out.set_sform(*ref.get_sform(coded=True))
        path = stem.with_name(stem.name + suffix)
        return replace_atomic(path, lambda f: f.write(out.to_bytes() if suffix == ".nii" else _gz(out)))
    if suffix in (".npy", ".npz"):
        buf = io.BytesIO()
        np.save(buf, ids)
        return replace_atomic(stem.with_name(stem.name + ".npy"), lambda f: f.write(buf.getvalue()))
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(ids).save(buf, format="PNG")
    return replace_atomic(stem.with_name(stem.name + ".png"), lambda f: f.write(buf.getvalue()))


def _gz(img) -> bytes:
    import gzip

    return gzip.compress(img.to_bytes(), compresslevel=6)
