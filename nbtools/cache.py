"""On-disk caches: where nbtools keeps its own records on this machine, and clearing a cache.
A stale cache is never worth a wrong run."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def clear_cache(path: str | Path = "cache") -> int:
    """Delete a cache folder (or file) and return the bytes freed; a missing path frees 0."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return 0
    freed = _size(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    log.info("cleared %s: %d bytes freed", path, freed)
    return freed


def cache_home() -> Path:
    """The folder for nbtools' records on this machine: $NBTOOLS_CACHE_DIR, else $XDG_CACHE_HOME/nbtools,
    else ~/.cache/nbtools. Local disk (in Colab /root/.cache/nbtools, never Drive); nothing in it is ever
    needed for a correct run, so `clear_cache(cache_home())` is always safe."""
    if os.environ.get("NBTOOLS_CACHE_DIR"):
        return Path(os.environ["NBTOOLS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nbtools"
