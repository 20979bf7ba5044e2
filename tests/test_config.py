"""TrainConfig: JSON round trip, and bad values rejected with the field named."""

import json

import pytest

import nbtools as nbt
from nbtools.env import resolve_precision
from nbtools.jsonsafe import to_jsonable


def test_json_round_trip_keeps_int_epoch_keys(tmp_path):
    cfg = nbt.TrainConfig(
        epochs=40,
        lr=5e-5,
        group_lrs={"backbone": 5e-5, "attention": 2e-4, "classifier": 5e-4},
        warmup_epochs=3,
        precision="auto",
        grad_accum=2,
        clip_norm=0.5,
        ema_decay=0.999,
        patience=50,
        min_delta=1e-4,
        min_epochs=20,
        unfreeze={8: "layer2", 15: "layer1"},
        nan_policy="skip",
        keep_last=3,
        seed=0,
    )
    assert nbt.TrainConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "c.json")
    back = nbt.TrainConfig.from_json(tmp_path / "c.json")
    assert back == cfg and back.unfreeze == {8: "layer2", 15: "layer1"}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("precision", "fp8", "one of 'auto', 'fp32', 'bf16', 'fp16'"),
        ("optimizer", "lamb", "one of 'adamw', 'adam', 'sgd'"),
        ("nan_policy", "clamp", "one of 'skip', 'raise'"),
        ("monitor", "val_iou", "one of 'val_loss'"),
        ("lr", 0.0, "a finite number > 0"),
        ("lr", float("nan"), "a finite number > 0"),
        ("epochs", 0, "an int >= 1"),
        ("epochs", 2.5, "an int >= 1"),
        ("grad_accum", True, "an int >= 1"),
        ("clip_norm", -1.0, "> 0.0 or None"),
        ("ema_decay", 1.5, "< 1.0 or None"),
        ("group_lrs", {"backbone": -1.0}, "{group prefix: lr > 0}"),
        ("unfreeze", {0: "layer1"}, "{epoch >= 1: module-name part}"),
        ("amp_fallback", "yes", "True or False"),
    ],
)
def test_bad_values_name_the_field(field, value, expected):
    with pytest.raises(
        ValueError, match=rf"TrainConfig\.{field} must be .*{__import__('re').escape(expected)}"
    ):
        nbt.TrainConfig(**{field: value})


def test_unknown_fields_in_saved_config_are_ignored_not_fatal(caplog):
    d = nbt.TrainConfig().to_dict() | {"from_the_future": 1}
    assert nbt.TrainConfig.from_dict(d) == nbt.TrainConfig()
    assert "from_the_future" in caplog.text


def test_diff_lists_changes():
    a = nbt.TrainConfig()
    assert a.diff(a.replace(lr=1e-4, clip_norm=0.5)) == {"lr": (1e-3, 1e-4), "clip_norm": (None, 0.5)}


def test_precision_auto_is_fp32_on_cpu_and_explicit_choices_pass():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half", "cpu")


def test_jsonable_converts_numpy_and_torch_and_nan():
    import numpy as np
    import torch

    obj = {
        "a": np.float32(0.5),
        "b": np.arange(3),
        "c": torch.tensor([1.5]),
        "d": float("nan"),
        1: (np.int64(2),),
    }
    out = to_jsonable(obj)
    assert json.loads(json.dumps(out, allow_nan=False)) == {
        "a": 0.5,
        "b": [0, 1, 2],
        "c": [1.5],
        "d": None,
        "1": [2],
    }
    with pytest.raises(TypeError, match="cannot store object"):
        to_jsonable({"x": object()})


def test_config_json_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    nbt.TrainConfig(epochs=3).to_json(path)

    def cut(src, dst):  # the process dies at the last moment of the write
        raise KeyboardInterrupt

    monkeypatch.setattr("nbtools.atomic.os.replace", cut)
    with pytest.raises(KeyboardInterrupt):
        nbt.TrainConfig(epochs=7).to_json(path)
    assert nbt.TrainConfig.from_json(path).epochs == 3  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left
