"""Colab defaults: the DataLoader arguments for the device, and setup()'s warning on a slow torch/cuDNN pair."""

import json
import logging

import pytest
import torch
from torch import nn

import nbtools as nbt
from nbtools.env import slow_conv3d_warning
from nbtools.train import start
from nbtools.train.loader import EvalBatches, default_workers, loader_kwargs, make_loader
from tests.helpers import NoisyBlobs, StopAfter, small_cnn


def test_workers_come_from_the_cpu_count_on_a_gpu_and_are_none_on_a_cpu():
    assert default_workers("cuda", cpus=2) == 2  # a standard Colab runtime
    assert default_workers("cuda", cpus=12) == 8
    assert default_workers("cuda", cpus=1) == 1
    assert default_workers("cpu", cpus=12) == 0  # the step needs the cores


def test_loader_arguments_on_a_gpu():
    kw = loader_kwargs(None, "cuda", persistent=True)
    assert kw == {
        "num_workers": default_workers("cuda"),
        "pin_memory": True,
        "persistent_workers": True,
        "prefetch_factor": 4,
    }
    assert loader_kwargs(2, "cuda")["persistent_workers"] is False  # training: fresh worker seeds each epoch


def test_loader_arguments_on_a_cpu_and_an_explicit_zero():
    assert loader_kwargs(None, "cpu") == {"num_workers": 0, "pin_memory": False}
    assert loader_kwargs(0, "cuda") == {"num_workers": 0, "pin_memory": True}  # an explicit 0 is kept
    assert loader_kwargs(2, "cpu", persistent=True) == {
        "num_workers": 2,
        "pin_memory": False,
        "persistent_workers": True,
        "prefetch_factor": 2,
    }


def test_make_loader_passes_them_to_the_dataloader():
    data = nbt.data.SyntheticVolumes(n=4, shape=(16, 16, 16), seed=0)
    loader = make_loader(data, EvalBatches(4, 2), 2, False, seed=0, persistent=True)
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers, loader.prefetch_factor) == (
        2,
        False,
        True,
        2,
    )
    assert sum(len(y) for _, y in loader) == 4


@pytest.mark.parametrize(
    ("torch_version", "cudnn", "warns"),
    [
        ("2.9.0+cu126", 91002, True),
        ("2.9.0", 91000, True),
        ("2.9.1+cu126", 91002, False),  # fixed torch
        ("2.9.0+cu126", 91500, False),  # another cuDNN
        ("2.8.0+cu126", 91002, False),
        ("2.9.0+cpu", None, False),  # no cuDNN
    ],
)
def test_the_slow_conv3d_pair(torch_version, cudnn, warns):
    message = slow_conv3d_warning(torch_version, cudnn)
    assert (message is not None) is warns
    if warns:
        assert "166122" in message and "nvidia-cudnn-cu12>=9.15" in message and "torch>=2.9.1" in message
        assert f"cuDNN 9.10.{cudnn % 100}" in message


def _fake_gpu(monkeypatch, torch_version, cudnn):
    monkeypatch.setattr(torch, "__version__", torch_version)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: cudnn)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)


def test_setup_warns_on_torch_2_9_0_with_cudnn_9_10(monkeypatch, caplog):
    _fake_gpu(monkeypatch, "2.9.0+cu126", 91002)
    with caplog.at_level(logging.WARNING, logger="nbtools.env"):
        env = nbt.setup(seed=0, device="cuda", verbose=False)
    assert env.gpu_name == "Tesla T4"
    assert "pytorch/pytorch#166122" in caplog.text and "Runtime version" in caplog.text


def test_setup_is_quiet_on_a_good_pair(monkeypatch, caplog):
    _fake_gpu(monkeypatch, "2.9.1+cu126", 91002)
    with caplog.at_level(logging.WARNING, logger="nbtools.env"):
        nbt.setup(seed=0, device="cuda", verbose=False)
    assert "166122" not in caplog.text


def _fit_blobs(run_dir, resume=None, batch_transform=None):
    cfg = nbt.TrainConfig(epochs=2, batch_size=8, lr=1e-2, checkpoint_every_minutes=None)
    assert cfg.num_workers is None  # the default: chosen for the device
    data, val = NoisyBlobs(n=32, seed=0), NoisyBlobs(n=8, seed=1, augment=False)
    model = small_cnn()
    loss = nn.CrossEntropyLoss()
    run = nbt.fit(
        model, data, val, loss, cfg, run_dir, resume=resume, batch_transform=batch_transform, verbose=False
    )
    return run, model


@pytest.mark.slow
def test_a_run_keeps_the_worker_count_it_started_with(tmp_path, monkeypatch):
    """num_workers=None becomes a count when a run starts (recorded in its config); a resume on a
    machine whose default differs keeps the recorded count, and so trains as the straight run did
    (NoisyBlobs augments in the workers, from each worker's seeded RNG)."""
    monkeypatch.setattr(start, "default_workers", lambda device_type: 1)
    straight, straight_model = _fit_blobs(tmp_path / "straight")
    assert straight.config.num_workers == 1
    assert json.loads((tmp_path / "straight" / "config.json").read_text())["num_workers"] == 1
    with pytest.raises(StopAfter.Disconnect):  # in epoch 2's first batch (4 an epoch)
        _fit_blobs(tmp_path / "resumed", batch_transform=StopAfter(4))
    monkeypatch.setattr(start, "default_workers", lambda device_type: 0)  # another runtime
    resumed, resumed_model = _fit_blobs(tmp_path / "resumed", resume="latest")
    assert resumed.config.num_workers == 1 and not resumed.config_changes
    for a, b in zip(straight_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    fresh, fresh_model = _fit_blobs(tmp_path / "fresh")  # the same run, loaded in this process
    assert fresh.config.num_workers == 0
    assert not all(  # other augmentations: the worker count matters
        torch.equal(a, b)
        for a, b in zip(straight_model.state_dict().values(), fresh_model.state_dict().values())
    )


def test_num_workers_takes_a_count_or_none():
    assert nbt.TrainConfig(num_workers=0).num_workers == 0
    with pytest.raises(ValueError, match=r"num_workers.*an int >= 0 or None"):
        nbt.TrainConfig(num_workers=-1)
