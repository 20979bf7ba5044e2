"""ImageFolder: 2D images (PNG/JPEG) from class sub-folders, a `path,label` CSV, or unlabelled files to
predict on, decoded to RGB and resized to one square size, for the focal2d pipeline.

The folder and CSV rules are VolumeFolder's (`sources.py`); the pixels are what `AlbumentationsDataset`
gives: uint8 RGB with `raw=True` (for an albumentations pipeline), else float32 (3, size, size)
ImageNet-normalised by `to_tensor`.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nbtools.data.augment2d import resize_image, to_tensor
from nbtools.data.sources import FileKind, list_files

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGES = FileKind("image", IMAGE_SUFFIXES, ("scan_001.png", "scan_002.jpg"))
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit grayscale PNGs open as one of these
_WHITE = (255, 255, 255, 255)


class ImageReadError(OSError):
    """An image file that cannot be decoded; the message names the file and what to do."""


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as a writable uint8 RGB array (H, W, 3), what albumentations takes.

    The EXIF orientation is applied (a phone photo comes out upright); grayscale and palette images
    become RGB; transparent pixels (RGBA, LA, a palette or PNG transparency) are laid over white, the
    colour of paper, not black; 16-bit grayscale is scaled to 8 bits (/257). A missing, truncated or
    corrupt file raises ImageReadError naming it. (A truncated file decodes silently with grey where
    data is missing if something set PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True.)
    """
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(
            f"{path} does not exist (any more): restore it, or build the dataset again without it"
        )
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
            if im.mode in _SIXTEEN_BIT:
                grey = np.round(np.asarray(im, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba)
            return np.array(im.convert("RGB"))
    # PIL raises OSError for a truncated file, SyntaxError / struct.error / zlib.error for broken
    # chunks, DecompressionBombError for a giant one
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        struct.error,
        zlib.error,
        Image.DecompressionBombError,
    ) as e:
        raise ImageReadError(
            f"cannot read {path} ({type(e).__name__}: {e}); the file is truncated or not a PNG/JPEG image: "
            f"export it again, or remove it from the folder / CSV"
        ) from e


class ImageFolder(Dataset):
    """Map-style dataset of ``(x, y)`` from image files: x float32 tensor (3, size, size), ImageNet-normalised
    exactly as `AlbumentationsDataset` does it (`to_tensor`), or with `raw=True` a uint8 RGB numpy array
    (size, size, 3), always that size, for ``AlbumentationsDataset(ImageFolder(..., raw=True), aug)``.

    root: a folder with one subfolder per class (root/<class_name>/**/*.png|.jpg|.jpeg), the folder
    relative CSV paths start from, or the CSV file itself. csv, labels, classes: as in VolumeFolder
    (labels="auto" reads files directly in root, or a CSV without a label column, unlabelled: labels
    -1, `.labeled` False). size: every image is resized to size x size (aspect ratio not kept) with
    cv2.INTER_AREA, the interpolation `document_augmentation(size=...)` uses, so both paths give the
    same pixels. Decoding: see `read_rgb`; a bad file raises ImageReadError (an OSError) naming it.
    `.paths`, `.labels` (int64), `.classes`, `.labeled`, `.root` describe the samples.

    >>> train = AlbumentationsDataset(ImageFolder("pages/train", 224, raw=True), document_augmentation())  # doctest: +SKIP
    >>> val = ImageFolder("pages/val", 224, classes=train.dataset.classes)                                 # doctest: +SKIP
    >>> val[0][0].shape                                                                                    # doctest: +SKIP
    torch.Size([3, 224, 224])
    """

    def __init__(
        self,
        root: str | Path,
        size: int,
        csv: str | Path | None = None,
        raw: bool = False,
        classes: Sequence[str] | None = None,
        labels: str = "required",
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be an int >= 1 (images become size x size), got {size!r}")
        self.size, self.raw = int(size), bool(raw)
        found = list_files(root, csv, IMAGES, labels, classes)
        self.root, self.paths, self.classes, self.labeled = (
            found.root,
            found.paths,
            found.classes,
            found.labeled,
        )
        self.labels = np.asarray(found.labels, dtype=np.int64)
        log.info("%r", self)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | np.ndarray, int]:
        image = resize_image(read_rgb(self.paths[index]), self.size)
        return (image if self.raw else to_tensor(image)), int(self.labels[index])

    def __repr__(self) -> str:
        head = f"ImageFolder({str(self.root)!r}, {len(self)} images, size {self.size}"
        if not self.labeled:
            return head + ", unlabelled)"
        counts = Counter(self.labels.tolist())
        per = ", ".join(f"{c}: {counts.get(i, 0)}" for i, c in enumerate(self.classes))
        return f"{head}, classes {{{per}}})"


def image_folder(root: str | Path, transform=None):
    """torchvision ImageFolder (root/<class_name>/*.png|jpg|...) whose samples are uint8 HWC numpy
    arrays at their own size (decoded by `read_rgb`), so an albumentations pipeline applies directly:
    `transform(img)` gets the array and returns what the sample becomes. For one fixed size, CSVs and
    unlabelled folders, use ImageFolder.

    >>> ds = image_folder("data/docs", transform=lambda img: aug(image=img)["image"])  # doctest: +SKIP
    """
    from torchvision.datasets import ImageFolder as TorchvisionImageFolder

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder; expected {root}/<class_name>/<image>.png (or .jpg, ...)"
        )
    return TorchvisionImageFolder(str(root), transform=transform, loader=read_rgb)
