"""nnU-Net's raw layout as it is: `imagesTr/{case}_0000.nii.gz` (one file per channel, `_0000`, `_0001`,
... stacked into the channels), `labelsTr/{case}.nii.gz`, and `dataset.json` naming the labels (v2
`{"background": 0, "grey_matter": 1}`, v1 `{"0": "background", "1": "grey_matter"}`) and the channels
(v2 `channel_names`, v1 `modality`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from nbtools.data.segcases import LAYOUTS, SegCase, SegmentationDataError, fail, files_by_case, pairing

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # {case}_{XXXX}{file_ending}


def from_nnunet(root: Path, masks: str) -> tuple[list[SegCase], list[str] | None]:
    meta = dataset_json(root / "dataset.json")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise SegmentationDataError(
            f"{root} has a dataset.json but no imagesTr/ folder; " + LAYOUTS.format(root=root)
        )
    channels: dict[str, dict[int, Path]] = {}
    problems = []
    for case_file, path in files_by_case(images_dir).items():
        m = _CHANNEL.match(case_file)
        if m is None:
            problems.append(
                f"{path} does not end in a channel number _0000, _0001, ... (nnU-Net: {{case}}_0000)"
            )
            continue
        channels.setdefault(m["case"], {})[int(m["channel"])] = path
    n_channels = meta["channels"] or max((max(ch) + 1 for ch in channels.values()), default=0)
    for case, ch in sorted(channels.items()):
        missing = [f"{case}_{k:04d}" for k in range(n_channels) if k not in ch]
        extra = sorted(k for k in ch if k >= n_channels)
        if missing:
            problems.append(
                f"case {case!r} has no channel file {', '.join(missing)} in {images_dir}/ "
                f"({n_channels} channels{' per dataset.json' if meta['channels'] else ' in other cases'})"
            )
        if extra:
            problems.append(
                f"case {case!r} has channel {extra[0]:04d}, beyond the {n_channels} channels of dataset.json"
            )
    if not labels_dir.is_dir() and masks == "required":
        problems.append(
            f"no labelsTr/ folder: put one mask per case there, named {{case}}{meta['ending'] or '.nii.gz'}"
        )
    labels = files_by_case(labels_dir) if labels_dir.is_dir() else {}
    problems += pairing(channels, labels, masks, images_dir, labels_dir)
    fail(
        problems,
        root,
        "nnU-Net's raw layout: imagesTr/{case}_0000.nii.gz (one file per channel), labelsTr/{case}.nii.gz.",
    )
    cases = [
        SegCase(c, tuple(ch[k] for k in sorted(ch)), labels.get(c)) for c, ch in sorted(channels.items())
    ]
    return cases, meta["classes"]


def dataset_json(path: Path) -> dict:
    """Label names (nnU-Net v2 `{"background": 0, ...}` or v1 `{"0": "background", ...}`), channel count
    (v2 channel_names, v1 modality) and file ending, each None when not given."""
    if not path.is_file():
        return {"classes": None, "channels": None, "ending": None}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SegmentationDataError(
            f"cannot read {path} ({type(e).__name__}: {e}); fix the JSON or remove the file"
        ) from e
    labels = meta.get("labels")
    classes = None
    if labels is not None:
        if not isinstance(labels, dict) or not labels:
            raise SegmentationDataError(
                f"{path}: labels must be a dict of label names and ids, got {labels!r}"
            )
        regions = [k for k, v in labels.items() if isinstance(v, (list, tuple))]
        if regions:
            raise SegmentationDataError(
                f"{path}: labels {regions} are nnU-Net regions (lists of ids), which are not supported: "
                f"give each class its own id"
            )
        v2 = all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values())
        pairs = (
            {v: k for k, v in labels.items()} if v2 else {_int(k, path): str(v) for k, v in labels.items()}
        )
        ids = sorted(pairs)
        if ids != list(range(len(ids))):
            raise SegmentationDataError(
                f"{path}: label ids must be 0, 1, ..., {len(ids) - 1} with 0 the background, got {ids}"
            )
        classes = [pairs[i] for i in ids]
    names = meta.get("channel_names", meta.get("modality"))
    channels = len(names) if isinstance(names, dict) and names else None
    return {"classes": classes, "channels": channels, "ending": meta.get("file_ending")}


def _int(key: str, path: Path) -> int:
    try:
        return int(key)
    except ValueError:
        raise SegmentationDataError(
            f'{path}: label {key!r} is neither v2 (`"name": id`) nor v1 (`"id": "name"`); use one form'
        ) from None
