import random

import numpy as np
import torch

import nbtools as nbt


def test_setup_prints_one_line_and_seeds(capsys):
    env = nbt.setup(seed=3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    nbt.seed_everything(3)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "device cpu" in out[0] and "precision fp32" in out[0]
    assert env.precision == "fp32" and not env.is_colab and env.gpu_name is None


def test_clear_cache_returns_bytes_and_tolerates_missing(tmp_path):
    assert nbt.clear_cache(tmp_path / "nope") == 0
    (tmp_path / "c" / "sub").mkdir(parents=True)
    (tmp_path / "c" / "sub" / "a.npy").write_bytes(b"x" * 1000)
    (tmp_path / "c" / "b.pkl").write_bytes(b"y" * 24)
    assert nbt.clear_cache(tmp_path / "c") == 1024
    assert not (tmp_path / "c").exists()
