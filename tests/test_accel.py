"""TrainConfig.channels_last and TrainConfig.compile take effect, and checkpoints keep the model's own keys."""

import logging

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import nbtools as nbt
from nbtools.runs import load_checkpoint
from nbtools.train import accel, epoch

CL3D = torch.channels_last_3d


class TwoChannelVolumes(Dataset):
    """(x: float32 (2, 8, 8, 8), y): two channels, so channels-last strides differ from contiguous ones."""

    def __init__(self, n=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 2, 8, 8, 8, generator=g), torch.arange(n) % 2

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def tiny3d():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(2, 4, 3),
        nn.BatchNorm3d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def _fit(model, tmp_path, resume=None, **cfg):
    config = nbt.TrainConfig(**{"epochs": 1, "batch_size": 4, "checkpoint_every_minutes": None, **cfg})
    data = TwoChannelVolumes()
    return nbt.fit(
        model, data, TwoChannelVolumes(4, 1), nn.CrossEntropyLoss(), config, tmp_path, resume, verbose=False
    )


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_reaches_the_weights_and_every_input_batch(tmp_path, channels_last):
    model = tiny3d()
    seen = []  # (training?, input in channels_last_3d?) of every forward
    model.register_forward_pre_hook(
        lambda m, args: seen.append((m.training, args[0].is_contiguous(memory_format=CL3D)))
    )
    _fit(model, tmp_path, channels_last=channels_last)
    assert model[0].weight.is_contiguous(memory_format=CL3D) is channels_last
    assert model[0].weight.is_contiguous() is not channels_last
    assert {training for training, _ in seen} == {True, False}  # training and validation batches
    assert all(cl is channels_last for _, cl in seen), seen
    saved = load_checkpoint(tmp_path / "epoch_001.pt")["model"]
    assert list(saved) == list(tiny3d().state_dict())


def test_channels_last_on_a_2d_model_and_back():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    accel.set_memory_format(model, True)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = accel.as_input(torch.randn(2, 3, 8, 8), True)
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    accel.set_memory_format(model, False)
    assert model[0].weight.is_contiguous()
    labels = torch.arange(4)
    assert accel.as_input(labels, True) is labels  # not an image: unchanged


@pytest.mark.slow
def test_compile_trains_through_the_compiled_module_and_saves_the_models_own_keys(tmp_path, monkeypatch):
    if accel.compile_unavailable("cpu") is not None:
        pytest.skip(
            f"torch.compile cannot run here: {accel.compile_unavailable('cpu')} (the fallback test covers it)"
        )
    used = []
    original = accel.compiled
    monkeypatch.setattr(epoch, "compiled", lambda m, on: used.append(original(m, on)) or used[-1])
    model = tiny3d()
    before = model[0].weight.detach().clone()
    _fit(model, tmp_path, compile=True)
    assert used and all(isinstance(m, torch._dynamo.eval_frame.OptimizedModule) for m in used)
    assert not torch.equal(before, model[0].weight)  # the compiled module trained the model's parameters
    saved = load_checkpoint(tmp_path / "epoch_001.pt")["model"]
    assert list(saved) == list(tiny3d().state_dict())  # no "_orig_mod." prefix
    fresh = tiny3d()
    fresh.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))  # strict: same keys
    run = _fit(model, tmp_path, resume="latest", epochs=2, compile=False)  # resume unaffected
    assert run.history[-1]["epoch"] == 2


def test_compile_falls_back_to_eager_with_a_message_where_it_cannot_compile(monkeypatch, caplog):
    monkeypatch.setattr(
        accel, "compile_unavailable", lambda device: "InvalidCxxCompiler: no working C++ compiler"
    )
    model = tiny3d()
    with caplog.at_level(logging.WARNING, logger="nbtools.train.accel"):
        assert accel.compiled(model, True) is model
    text = caplog.text
    assert "cannot compile" in text and "InvalidCxxCompiler" in text and "compile=False" in text
    assert accel.compiled(model, False) is model  # off: nothing to say


@pytest.mark.parametrize("field", ["channels_last", "compile"])
def test_the_settings_are_booleans(field):
    with pytest.raises(ValueError, match=f"TrainConfig.{field} must be True or False"):
        nbt.TrainConfig(**{field: "yes"})
    assert nbt.TrainConfig.from_json(nbt.TrainConfig(**{field: True}).to_json()) == nbt.TrainConfig(
        **{field: True}
    )
