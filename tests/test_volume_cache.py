"""The volume cache never serves a stale or poisoned entry (seed 000): it rebuilds when the config or
the source changes, and when an entry is corrupt or holds NaN; writes are atomic."""

import logging
import math
import os

import numpy as np
import pytest
import torch

import nbtools as nbt
from nbtools.atomic import save_atomic
from nbtools.data import VolumeCache, VolumeFolder
from nbtools.data import folders as folders_module


@pytest.fixture
def counted(monkeypatch):
    """Counts the real preprocessing runs behind VolumeFolder."""
    calls = []
    real = folders_module.load_volume

    def load_volume(path, *args):
        calls.append(path.name)
        return real(path, *args)

    monkeypatch.setattr(folders_module, "load_volume", load_volume)
    return calls


def _data(root, value=1.0, shape=(6, 6, 6)):
    (root / "a").mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(int(value)).normal(value, 1.0, shape).astype(np.float32)
    np.save(root / "a" / "v.npy", arr)
    return root / "a" / "v.npy"


def test_hit_then_rebuild_when_the_config_changes(tmp_path, counted):
    _data(tmp_path / "data")
    cache = tmp_path / "cache"
    ds = VolumeFolder(tmp_path / "data", shape=(6, 6, 6), cache_dir=cache)
    first = ds[0][0]
    assert torch.equal(ds[0][0], first) and len(counted) == 1  # second read: from the cache
    other = VolumeFolder(tmp_path / "data", shape=(4, 4, 4), cache_dir=cache)
    assert other[0][0].shape == (1, 4, 4, 4) and len(counted) == 2
    raw = VolumeFolder(tmp_path / "data", shape=(6, 6, 6), normalize=None, cache_dir=cache)
    assert not torch.equal(raw[0][0], first) and len(counted) == 3
    assert torch.equal(ds[0][0], first) and len(counted) == 3  # both configs stay cached side by side


def test_rebuild_when_the_source_changes(tmp_path, counted, caplog):
    src = _data(tmp_path / "data", value=1.0)
    ds = VolumeFolder(tmp_path / "data", shape=(6, 6, 6), normalize=None, cache_dir=tmp_path / "cache")
    assert ds[0][0].mean() == pytest.approx(1.0, abs=0.5)
    _data(tmp_path / "data", value=9.0)  # same size, new content and mtime
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clocks: make sure mtime moved
    with caplog.at_level(logging.INFO, logger="nbtools.data.cache"):
        assert ds[0][0].mean() == pytest.approx(9.0, abs=0.5)
    assert len(counted) == 2 and "stale (mtime_ns" in caplog.text
    _data(tmp_path / "data", value=9.0, shape=(6, 6, 7))  # size changes too
    assert ds[0][0].shape == (1, 6, 6, 6) and len(counted) == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "nan"])
def test_rebuild_when_the_entry_is_corrupt_or_holds_nan(tmp_path, counted, caplog, damage):
    src = _data(tmp_path / "data")
    ds = VolumeFolder(tmp_path / "data", shape=(6, 6, 6), cache_dir=tmp_path / "cache")
    good = ds[0][0]
    entry = ds.cache.entry(src, ds.config)
    assert entry.is_file()
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:200])
    elif damage == "garbage":
        entry.write_bytes(b"not a torch file")
    else:  # a valid entry with the right fingerprint whose volume went bad (seed 000's pickles)
        poisoned = good[0].clone()
        poisoned[0, 0, 0] = math.nan
        fp = VolumeCache.fingerprint(src, ds.config)
        save_atomic({"format": "nbtools-volume-cache", "fingerprint": fp, "volume": poisoned}, entry)
    with caplog.at_level(logging.WARNING, logger="nbtools.data.cache"):
        again = ds[0][0]
    assert torch.equal(again, good) and len(counted) == 2
    assert ("NaN" if damage == "nan" else "unreadable") in caplog.text and "rebuilding" in caplog.text
    assert torch.equal(ds[0][0], good) and len(counted) == 2  # the rebuilt entry is trusted again


def test_nan_volumes_are_never_cached(tmp_path, counted, caplog):
    src = _data(tmp_path / "data")
    arr = np.load(src)
    arr[1, 1, 1] = math.nan
    np.save(src, arr)
    ds = VolumeFolder(tmp_path / "data", shape=(6, 6, 6), cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="nbtools.data.cache"):
        assert torch.isnan(ds[0][0]).sum() == 1
    assert "not caching" in caplog.text and not ds.cache.entry(src, ds.config).exists()
    ds[0]
    assert len(counted) == 2


def test_writes_are_atomic_and_clear_cache_clears(tmp_path, counted, monkeypatch):
    src = _data(tmp_path / "data")
    cache = tmp_path / "cache"
    ds = VolumeFolder(tmp_path / "data", shape=(6, 6, 6), cache_dir=cache)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # a disconnect in the middle of the write

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(torch, "save", dies)
        ds[0]
    assert list(cache.iterdir()) == []  # no entry, no temp file
    ds[0]
    assert [p.name for p in cache.iterdir()] == [ds.cache.entry(src, ds.config).name]
    assert nbt.clear_cache(cache) > 0 and not cache.exists()
    ds[0]
    assert len(counted) == 3
