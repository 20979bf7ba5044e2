"""A disk cache of preprocessed volumes that cannot go stale: a stale or broken entry is rebuilt, never used.

Each entry is stored under a key of (source path, preprocessing config) and holds the fingerprint it
was built from: the source's size and mtime_ns and the config. An entry is used only if the fingerprint
still matches, the file loads, and every value is finite; otherwise it is rebuilt and the log says why.
Entries are written like checkpoints (same-folder temp file, fsync, os.replace), so a crash or a Colab
disconnect mid-write leaves the old entry or the new one, and several DataLoader workers may write
at once. Files are `torch.load(weights_only=True)`-safe, never pickles. `nbt.clear_cache(cache_dir)`
deletes it all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nbtools.atomic import save_atomic

log = logging.getLogger(__name__)

FORMAT = "nbtools-volume-cache"


class VolumeCache:
    """Preprocessed volumes in `cache_dir`, one file per (source, config).

    >>> cache = VolumeCache("cache/volumes")
    >>> vol = cache.get("data/a.npy", {"shape": [64, 64, 64]}, lambda: load_volume(...))  # doctest: +SKIP
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir)

    def __repr__(self) -> str:
        return f"VolumeCache({str(self.dir)!r})"

    @staticmethod
    def fingerprint(source: str | Path, config: dict[str, Any]) -> dict[str, Any]:
        """What an entry must match: the source's resolved path, size, mtime_ns, and the config."""
        source = Path(source).resolve()
        st = source.stat()
        return {
            "source": str(source),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "config": json.dumps(config, sort_keys=True, default=str),
        }

    def entry(self, source: str | Path, config: dict[str, Any]) -> Path:
        """The file that holds (source, config); a config change is a different file, so two datasets
        with different preprocessing can share a cache_dir without rebuilding each other's entries."""
        source = Path(source).resolve()
        key = json.dumps([str(source), config], sort_keys=True, default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", source.name)[:60]
        return self.dir / f"{stem}-{digest}.pt"

    def get(self, source: str | Path, config: dict[str, Any], build: Callable[[], Any]) -> torch.Tensor:
        """The cached volume for (source, config), or `build()`'s result, cached if it is all finite."""
        fp = self.fingerprint(source, config)
        path = self.entry(source, config)
        if path.exists():
            vol, why = self._load(path, fp)
            if vol is not None:
                return vol
            log.log(
                logging.INFO if why.startswith("stale") else logging.WARNING,
                "cache entry %s for %s is %s: rebuilding",
                path.name,
                source,
                why,
            )
            path.unlink(missing_ok=True)
        out = build()
        vol = out if isinstance(out, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(out))
        bad = int((~torch.isfinite(vol)).sum())
        if bad:
            log.warning("not caching %s: its preprocessed volume holds %d NaN/Inf values", source, bad)
        else:
            save_atomic({"format": FORMAT, "fingerprint": fp, "volume": vol}, path)
        return vol

    @staticmethod
    def _load(path: Path, fp: dict[str, Any]) -> tuple[torch.Tensor | None, str]:
        """(volume, "") for a good entry, else (None, why it cannot be trusted)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (
            Exception
        ) as e:  # torch raises RuntimeError, pickle.UnpicklingError, EOFError, ... on bad files
            return None, f"unreadable ({type(e).__name__}: {e})"
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            return None, "not an nbtools cache entry"
        old = state.get("fingerprint", {})
        if old != fp:
            changed = [k for k in ("source", "size", "mtime_ns", "config") if old.get(k) != fp[k]]
            what = ", ".join(f"{k} {old.get(k)!r} -> {fp[k]!r}" for k in changed if k != "config")
            if "config" in changed:
                what = ", ".join(filter(None, [what, "preprocessing config changed"]))
            return None, f"stale ({what})"
        vol = state.get("volume")
        if not isinstance(vol, torch.Tensor):
            return None, "missing its volume"
        bad = int((~torch.isfinite(vol)).sum()) if vol.is_floating_point() else 0
        if bad:
            return None, f"holding {bad} NaN/Inf values"
        return vol, ""
