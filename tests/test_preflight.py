"""Bad data is refused before the first epoch, naming the set, the index and what to do, and nothing
in run_dir is touched (issue 14, "Unclear": datasets that raise, bad labels, empty or wrong-channel
validation sets)."""

import time

import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

import nbtools as nbt
from tests.helpers import NoisyBlobs, small_cnn

CFG = nbt.TrainConfig(epochs=1, batch_size=8, checkpoint_every_minutes=None)


class SlowBlobs(NoisyBlobs):
    """Each sample costs 20 ms: a failure after an epoch would take over a second."""

    def __getitem__(self, i):
        time.sleep(0.02)
        return super().__getitem__(i)


class Raises(NoisyBlobs):
    def __getitem__(self, i):
        raise OSError(f"cannot read volume_{i:03d}.nii.gz")


class NamedLabels(NoisyBlobs):
    def __getitem__(self, i):
        return super().__getitem__(i)[0], "forged"


def _pairs(labels, channels=1, n=16):
    return TensorDataset(torch.randn(n, channels, 8, 8), labels)


CASES = {
    "raises": (
        Raises(),
        NoisyBlobs(seed=1),
        ValueError,
        r"the training data cannot be read: training data\[0\] "
        r"raised OSError: cannot read volume_000\.nii\.gz; nbt\.validate_dataset",
    ),
    "val raises": (SlowBlobs(), Raises(seed=1), ValueError, r"validation data\[0\] raised OSError"),
    "string label": (
        NamedLabels(),
        NoisyBlobs(seed=1),
        ValueError,
        r"the label of training data\[0\] is 'forged' \(a str\), not a number",
    ),
    "negative label": (
        _pairs(-torch.ones(16).long()),
        NoisyBlobs(seed=1),
        ValueError,
        r"the training data has 16 bad labels \(index 0: label -1; .* and 11 more\); labels must be "
        r"whole numbers in \[0, 2\) \(the model has 2 outputs\)",
    ),
    "too large label": (
        _pairs(torch.tensor([0, 1] * 7 + [5, 1])),
        NoisyBlobs(seed=1),
        ValueError,
        r"the training data has 1 bad label \(index 14: label 5\)",
    ),
    "fractional label": (
        _pairs(torch.full((16,), 0.5)),
        NoisyBlobs(seed=1),
        ValueError,
        r"index 0: label 0\.5",
    ),
    "float class labels": (
        SlowBlobs(),
        _pairs(torch.ones(16)),
        ValueError,
        r"the loss cannot be computed on validation data\[0\].*int64",
    ),
    "bad label in a subset": (
        Subset(_pairs(torch.tensor([0] * 15 + [7])), [3, 15]),
        NoisyBlobs(seed=1),
        ValueError,
        r"1 bad label \(index 1: label 7\)",
    ),
    "empty val": (SlowBlobs(), [], ValueError, r"the validation data is empty \(len 0\)"),
    "no val (None)": (
        SlowBlobs(),
        None,
        ValueError,
        r"val_data is None, but fit validates every epoch.*nbt\.data\.holdout_split\(labels, fraction=0\.2\)",
    ),
    "no train (None)": (None, NoisyBlobs(seed=1), ValueError, r"train_data is None"),
    "empty train": ([], NoisyBlobs(seed=1), ValueError, r"the training data is empty \(len 0\)"),
    "wrong-channel val": (
        SlowBlobs(),
        _pairs(torch.zeros(16).long(), channels=3),
        ValueError,
        r"validation samples have shape \(3, 8, 8\) but training samples \(1, 8, 8\)",
    ),
    "wrong-channel both": (
        _pairs(torch.zeros(16).long(), 3),
        _pairs(torch.zeros(16).long(), 3),
        ValueError,
        r"the model cannot take validation data\[0\], an input of shape \(3, 8, 8\)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_refused_before_training_and_touches_nothing(case, tmp_path):
    train, val, error, message = CASES[case]
    (tmp_path / "keep.txt").write_text("the user's own file")
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        nbt.fit(small_cnn(), train, val, nn.CrossEntropyLoss(), CFG, tmp_path, verbose=False)
    assert time.perf_counter() - start < 0.8  # no epoch of SlowBlobs was trained first
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_a_one_output_model_takes_float_targets_in_0_1():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    loss = nbt.losses.FocalLoss(gamma=2.0, alpha=0.25)
    good = _pairs(torch.tensor([0.0, 1.0] * 8))
    from nbtools.train.preflight import preflight

    preflight(model, good, good, loss, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"index 3: label 2.*in \[0, 1\] \(the model has one output"):
        preflight(model, _pairs(torch.tensor([0.0, 1.0, 0.0, 2.0] * 4)), good, loss, torch.device("cpu"))


def test_preflight_draws_no_random_numbers_that_training_sees(tmp_path):
    """An augmenting dataset is read before training; a run with it is still the run without it."""
    a = nbt.fit(
        small_cnn(),
        NoisyBlobs(),
        NoisyBlobs(seed=1),
        nn.CrossEntropyLoss(),
        CFG,
        tmp_path / "a",
        verbose=False,
    )
    torch.manual_seed(123)  # whatever state the notebook left: fit seeds after the preflight
    b = nbt.fit(
        small_cnn(),
        NoisyBlobs(),
        NoisyBlobs(seed=1),
        nn.CrossEntropyLoss(),
        CFG,
        tmp_path / "b",
        verbose=False,
    )
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
