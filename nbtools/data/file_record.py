"""What the file check remembers, so the same files are not read twice. Two records, for two cases:

- per machine (`PassedFiles`): each file that passed, with its stamp (size, mtime, ctime), one small
  JSON per folder in `nbtools.cache.cache_home()/data-checks` (local disk, /root/.cache in Colab). It
  serves a rerun in the same session, and after a fix only the changed files are read again.
- per run (`set_key`): one sha256 over every file's relative path, size and mtime, kept in the run's
  meta["data"]["file_check"] (in metrics.json and each checkpoint, written only once the data passed).
  It serves a resume after Colab recycled the VM (the local record is gone; the run folder on Drive
  is not), and costs no file of its own.

A stamp is taken before a file is read and again after; a file is remembered only if the two agree,
so a file written while it was read is read again next time. Neither record vouches for a file whose
size or mtime changed since it passed. The mtime joins the key here, although the data fingerprint
(which decides whether a resume trains on the same data) leaves it out, because the two err on
opposite sides: a copy of the data (a Drive re-upload, `cp` without -p) has new mtimes and the same
content, which for a resume is the same data and for this record only a re-read. Content is not
hashed: that costs the read the records save. What size and mtime cannot see is a file rewritten at
the same size with its mtime set back (`touch -r`, `cp -p` over it): the per-machine record also
compares the change time, which no tool sets back; the run's key leaves it out, since it must hold on
another machine (a new Colab VM mounting the same Drive), where the change time is whatever that
mount reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from nbtools.atomic import write_json_atomic
from nbtools.cache import cache_home
from nbtools.data.fingerprint import relative_path

log = logging.getLogger(__name__)

FORMAT = "nbtools-passed-files"
CHECK_VERSION = 1  # bump when the check grows stricter: records of a laxer check are then not trusted


class Stamp(NamedTuple):
    size: int
    mtime_ns: int
    ctime_ns: int


def stamp(path: str | Path) -> Stamp | None:
    """The file's stamp, or None when it cannot be stat'ed (gone, no permission)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return Stamp(st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def reader_of(dataset: Any) -> dict[str, Any]:
    """How a dataset decodes its files (its type and `.config`, or an ImageFolder's size): a file that
    passed one reader has not passed another (a volume without foreground for a new mask_threshold)."""
    config = getattr(dataset, "config", None)
    if not isinstance(config, dict):
        config = {k: getattr(dataset, k) for k in ("size", "shape") if hasattr(dataset, k)}
    return {"type": type(dataset).__name__, "check": CHECK_VERSION, **config}


def set_key(parts: Sequence[tuple[dict[str, Any], Path, Sequence[Path], Sequence[Stamp | None]]]) -> str:
    """sha256 of every (reader, [path relative to root, size, mtime_ns]) of the sets in `parts`, each
    (reader, root, paths, stamps): equal keys mean the same files at the same sizes and mtimes, read
    the same way. Relative paths, so the same files under a moved root (a Drive mounted elsewhere)
    keep their key; no change time, which a remount does not keep."""
    body = []
    for reader, root, paths, stamps in parts:
        resolved = Path(root).resolve()
        files = sorted(
            [relative_path(Path(p), resolved), s.size, s.mtime_ns]
            if s
            else [relative_path(Path(p), resolved)]
            for p, s in zip(paths, stamps)
        )
        body.append([reader, files])
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class PassedFiles:
    """The files under one root that passed the check with one reader, as stamps, in a small JSON file
    in `cache_dir` (default: cache_home()/data-checks). A record that cannot be read is no record."""

    def __init__(self, root: str | Path, reader: dict[str, Any], cache_dir: str | Path | None = None) -> None:
        self.root = Path(root).resolve()
        self.reader = reader
        folder = Path(cache_dir) if cache_dir is not None else cache_home() / "data-checks"
        name = json.dumps([str(self.root), reader], sort_keys=True, default=str)
        self.path = folder / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.json"
        self.files = self._load()

    def _load(self) -> dict[str, list[int]]:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("ignoring the file-check record %s (%s: %s)", self.path, type(e).__name__, e)
            return {}
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("reader") != self.reader:
            return {}
        files = state.get("files")
        return files if isinstance(files, dict) else {}

    def passed(self, path: Path, now: Stamp | None) -> bool:
        """True when `path` passed before with exactly the stamp it has now."""
        return now is not None and self.files.get(relative_path(path, self.root)) == list(now)

    def add(self, path: Path, at: Stamp) -> None:
        self.files[relative_path(path, self.root)] = list(at)

    def save(self) -> None:
        """Write the record; a cache folder that cannot be written costs a re-read next time, not the run."""
        state = {"format": FORMAT, "root": str(self.root), "reader": self.reader, "files": self.files}
        try:
            write_json_atomic(self.path, state)
        except OSError as e:
            log.warning(
                "could not keep the file-check record in %s (%s): the files are read again next time",
                self.path,
                e,
            )
