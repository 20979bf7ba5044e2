"""Colab defaults: the DataLoader arguments for the device, and setup()'s warning on a slow torch/cuDNN pair."""

import logging

import pytest
import torch

import nbtools as nbt
from nbtools.env import slow_conv3d_warning
from nbtools.train.loader import EvalBatches, default_workers, loader_kwargs, make_loader


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
