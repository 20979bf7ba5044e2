"""Bad data is refused before the first epoch, naming the set, the index and what to do, and nothing
in run_dir is touched (issue 14, "Unclear": datasets that raise, bad labels, empty or wrong-channel
validation sets)."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

import nbtools as nbt
from tests.helpers import NoisyBlobs, small_cnn, tiny_fit

# num_workers=0: every sample is read in this process, where CountedBlobs sees it (on a GPU the default
# would read them in loader processes)
CFG = nbt.TrainConfig(epochs=1, batch_size=8, num_workers=0, checkpoint_every_minutes=None)


class CountedBlobs(NoisyBlobs):
    """Keeps the index of every sample read: an epoch trained before the refusal would read them all."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads: list[int] = []

    def __getitem__(self, i):
        self.reads.append(i)
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
    "val raises": (CountedBlobs(), Raises(seed=1), ValueError, r"validation data\[0\] raised OSError"),
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
        CountedBlobs(),
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
    "empty val": (CountedBlobs(), [], ValueError, r"the validation data is empty \(len 0\)"),
    "no val (None)": (
        CountedBlobs(),
        None,
        ValueError,
        r"val_data is None, but fit validates every epoch.*nbt\.data\.holdout_split\(labels, fraction=0\.2\)",
    ),
    "no train (None)": (None, NoisyBlobs(seed=1), ValueError, r"train_data is None"),
    "empty train": ([], NoisyBlobs(seed=1), ValueError, r"the training data is empty \(len 0\)"),
    "wrong-channel val": (
        CountedBlobs(),
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
    reads = getattr(train, "reads", [])
    reads.clear()
    with pytest.raises(error, match=message):
        # nbt.fit itself: tiny_fit would put its own data in place of a None
        nbt.fit(small_cnn(), train, val, nn.CrossEntropyLoss(), CFG, tmp_path, verbose=False)
    # Counted, not timed (a busy machine stretches the clock): the first sample only, no batch of an epoch
    assert reads in ([], [0]), f"fit read training samples {reads} before refusing"
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
    a = tiny_fit(CFG, tmp_path / "a", val=NoisyBlobs(seed=1))
    torch.manual_seed(123)  # whatever state the notebook left: fit seeds after the preflight
    b = tiny_fit(CFG, tmp_path / "b", val=NoisyBlobs(seed=1))
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_a_dataset_s_labels_are_read_without_loading_a_sample_or_not_at_all():
    from nbtools.data.samples import labels_of

    class Listed(torch.utils.data.Dataset):
        def __init__(self, labels):
            self.targets = labels

        def __len__(self):
            return 4

        def __getitem__(self, i):
            raise AssertionError("labels_of read a sample")

    assert labels_of(Listed([1, 0, 1, 1])).tolist() == [1, 0, 1, 1]
    assert labels_of(Subset(Listed(np.array([3, 4, 5, 6])), [2, 0])).tolist() == [5, 3]
    assert labels_of(_pairs(torch.arange(16))).tolist() == list(range(16))
    masks = torch.zeros(4, 8, 8, dtype=torch.long)
    assert labels_of(Listed(masks)) is masks  # segmentation: a mask per sample
    for unreadable in (["cat", "dog", "cat", "cat"], [1, 0], [[0], [1, 1], [0], [1]], None):
        assert labels_of(Listed(unreadable)) is None, unreadable  # names, the wrong length, ragged, absent
    assert labels_of(TensorDataset(torch.zeros(3))) is None and labels_of(Raises()).equal(Raises().y)
