"""TrainConfig under the bad values of issue 14: each raises ValueError naming the field; numpy numbers pass."""

import re

import numpy as np
import pytest

import nbtools as nbt


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("group_lrs", {"fc": "abc"}),
        ("group_lrs", None),
        ("group_lrs", 1e-3),
        ("group_lrs", ["fc"]),
        ("group_lrs", {"fc": True}),
        ("unfreeze", {"a": "layer2"}),
        ("unfreeze", {2.5: "layer2"}),
        ("unfreeze", "layer2"),
        ("unfreeze", {3: 7}),
        ("seed", 2**64),
        ("ema_decay", 1.0),
    ],
)
def test_bad_value_raises_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^TrainConfig\.{field} must be .*, got {re.escape(repr(value))}"):
        nbt.TrainConfig(**{field: value})


def test_warmup_longer_than_the_run_is_refused():
    with pytest.raises(ValueError, match=r"TrainConfig\.warmup_epochs must be <= epochs \(5\)"):
        nbt.TrainConfig(epochs=5, warmup_epochs=6)
    assert nbt.TrainConfig(epochs=5, warmup_epochs=5).warmup_epochs == 5


def test_numpy_numbers_are_accepted_as_plain_python_numbers():
    cfg = nbt.TrainConfig(
        epochs=np.int64(4),
        batch_size=np.int32(8),
        lr=np.float32(0.5),
        seed=np.uint64(3),
        group_lrs={"fc": np.float64(1e-3)},
        unfreeze={np.int64(2): "layer1"},
        amp_fallback=np.bool_(False),
    )
    assert type(cfg.epochs) is int and type(cfg.seed) is int and type(cfg.lr) is float
    assert cfg.unfreeze == {2: "layer1"} and type(next(iter(cfg.unfreeze))) is int
    assert cfg.amp_fallback is False
    assert nbt.TrainConfig.from_json(cfg.to_json()) == cfg  # and it round-trips through JSON


def test_json_keys_of_unfreeze_still_round_trip():
    assert nbt.TrainConfig(unfreeze={"8": "layer2"}).unfreeze == {8: "layer2"}
