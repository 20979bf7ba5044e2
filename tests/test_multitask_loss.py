"""MultiTaskLoss: named heads with their losses and weights, dict or tuple outputs, every term on the
device, bad input named, and each head's task told from its loss and targets."""

import doctest

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import nbtools as nbt
from nbtools.losses import multitask
from nbtools.losses.multitask import MultiTaskLoss


def seed002_batch(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {"cov": torch.randn(b, 3, 3, generator=g, requires_grad=True), "k": torch.randn(b, 4, generator=g)}
    out["k"].requires_grad_(True)
    y = {"cov": torch.randn(b, 3, 3, generator=g), "k": torch.randint(0, 4, (b,), generator=g)}
    return out, y


def test_total_and_terms_equal_the_weighted_sum_of_the_heads_losses():
    loss = nbt.losses.MultiTaskLoss({"cov": (nn.MSELoss(), 1.0), "k": (nn.CrossEntropyLoss(), 0.05)})
    out, y = seed002_batch()
    total, terms = loss.with_terms(out, y)
    mse, ce = nn.functional.mse_loss(out["cov"], y["cov"]), nn.functional.cross_entropy(out["k"], y["k"])
    torch.testing.assert_close(total, mse + 0.05 * ce)
    torch.testing.assert_close(terms["cov"], mse)
    torch.testing.assert_close(terms["cov.raw"], mse)
    torch.testing.assert_close(terms["k"], 0.05 * ce)
    torch.testing.assert_close(terms["k.raw"], ce)
    assert list(terms) == ["cov", "cov.raw", "k", "k.raw"]
    assert all(t.requires_grad for t in terms.values())  # attached: per-term gradients can be taken
    torch.testing.assert_close(loss(out, y), total)
    total.backward()
    assert out["cov"].grad is not None and out["k"].grad is not None


def test_a_head_loss_with_terms_of_its_own_reports_them():
    combo = nbt.losses.ComboLoss(
        {"dice": (nbt.losses.DiceLoss(), 1.0), "focal": (nbt.losses.FocalLoss(), 1.0)}
    )
    loss = MultiTaskLoss(
        {"masks": (combo, 1.0), "labels": (nn.BCEWithLogitsLoss(), 0.4)}, order=("masks", "labels")
    )
    masks, labels = torch.randn(2, 3, 8, 8), torch.randn(2, 1)
    y = (torch.randint(0, 3, (2, 8, 8)), torch.randint(0, 2, (2, 1)).float())
    total, terms = loss.with_terms((masks, labels), y)  # segmentation_models_pytorch with aux_params
    assert list(terms) == ["masks", "masks.raw", "masks.dice", "masks.focal", "labels", "labels.raw"]
    torch.testing.assert_close(
        total, combo(masks, y[0]) + 0.4 * nn.functional.binary_cross_entropy_with_logits(labels, y[1])
    )
    assert loss.head_tasks((masks, labels), y) == {"masks": "segmentation", "labels": "classification"}
    by_position = MultiTaskLoss({0: (combo, 1.0), 1: (nn.BCEWithLogitsLoss(), 0.4)})
    torch.testing.assert_close(by_position((masks, labels), list(y)), total)
    assert by_position.names == ["0", "1"]


class Seed002(Dataset):
    """(volume, {"cov": 3x3 float, "k": int}) as a user's dataset returns it."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.randn(1, 4, 4, 4), {"cov": torch.eye(3) * i, "k": i % 3}


def test_dict_targets_from_a_dataloader():
    _, y = next(iter(DataLoader(Seed002(), batch_size=4)))
    assert y["k"].dtype == torch.int64 and y["cov"].shape == (4, 3, 3)
    loss = MultiTaskLoss({"cov": (nn.MSELoss(), 1.0), "k": (nn.CrossEntropyLoss(), 0.1)})
    out = {"cov": torch.zeros(4, 3, 3), "k": torch.zeros(4, 3)}
    assert loss(out, y).isfinite()
    assert loss.head_tasks(out, y) == {"cov": "regression", "k": "classification"}


@pytest.mark.parametrize(
    "outputs, targets, error, match",
    [
        ({"cov": 0}, "ok", ValueError, r"outputs have no 'k' \(outputs: \['cov'\]\)"),
        ({"cov": 0, "k": 0, "snr": 0}, "ok", ValueError, r"output 'snr' has no loss.*weight 0.0 watches it"),
        (
            "ok",
            {"cov": 0},
            ValueError,
            r"targets have no 'k' for head 'k' \(target keys: \['cov'\]\).*'cov', 'k'",
        ),
        ((0, 0), "ok", ValueError, r"head 'cov' has no position: key the heads 0, 1, ... or pass order="),
        (torch.zeros(2), "ok", TypeError, r"got Tensor; a single-output model needs its head's loss alone"),
    ],
)
def test_bad_structure_is_named(outputs, targets, error, match):
    loss = MultiTaskLoss({"cov": (nn.MSELoss(), 1.0), "k": (nn.CrossEntropyLoss(), 0.05)})
    ok_out, ok_y = seed002_batch()
    with pytest.raises(error, match=match):
        loss.with_terms(ok_out if outputs == "ok" else outputs, ok_y if targets == "ok" else targets)


def test_tuple_positions_are_checked_both_ways():
    loss = MultiTaskLoss({0: (nn.MSELoss(), 1.0), 1: (nn.MSELoss(), 1.0)})
    with pytest.raises(ValueError, match="head '1' is position 1 but the outputs have 1 entries; return it"):
        loss((torch.zeros(2),), (torch.zeros(2), torch.zeros(2)))
    with pytest.raises(ValueError, match=r"output 2 \(of 3\) has no loss"):
        loss((torch.zeros(2),) * 3, (torch.zeros(2),) * 2)
    with pytest.raises(ValueError, match=r"head '1' is position 1 but the targets have 1 entries$"):
        loss((torch.zeros(2),) * 2, (torch.zeros(2),))


def test_bad_construction_is_named():
    with pytest.raises(ValueError, match="weight of head 'k' must be a finite number >= 0, got -1"):
        MultiTaskLoss({"k": (nn.CrossEntropyLoss(), -1)})
    with pytest.raises(ValueError, match="weight of head 'k' must be a finite number >= 0, got nan"):
        MultiTaskLoss({"k": (nn.CrossEntropyLoss(), float("nan"))})
    with pytest.raises(ValueError, match=r"heads\['k'\] must be a \(loss, weight\) tuple"):
        MultiTaskLoss({"k": nn.CrossEntropyLoss()})
    with pytest.raises(ValueError, match=r"without '\.' or '\|'"):
        MultiTaskLoss({"a.b": (nn.MSELoss(), 1.0)})
    with pytest.raises(ValueError, match=r"tasks\['x'\] = 'regression'; heads are \['k'\]"):
        MultiTaskLoss({"k": (nn.MSELoss(), 1.0)}, tasks={"x": "regression"})
    with pytest.raises(ValueError, match=r"head 'k' is not in order=\['a'\]"):
        MultiTaskLoss({"k": (nn.MSELoss(), 1.0)}, order=("a",))


def test_check_names_the_head_and_sample_of_a_nonfinite_target():
    loss = MultiTaskLoss({"cov": (nn.MSELoss(), 1.0), "k": (nn.CrossEntropyLoss(), 0.05)})
    out, y = seed002_batch()
    loss.check(out, y)
    y["cov"][4, 1, 2] = float("inf")
    with pytest.raises(
        ValueError, match=r"target of head 'cov' is not finite in sample 4 of the batch \(1 such"
    ):
        loss.check(out, y)
    _, terms = loss.with_terms(out, y)  # the step itself does not read the device: the term shows it
    assert not terms["cov.raw"].isfinite() and terms["k.raw"].isfinite()


def test_head_tasks_from_losses_and_shapes_and_told_where_ambiguous():
    class OwnLoss(nn.Module):
        def forward(self, out, y):
            return ((out - y) ** 2).mean()

    loss = MultiTaskLoss(
        {"seg": (nn.CrossEntropyLoss(), 1.0), "age": (nn.L1Loss(), 1.0), "own": (OwnLoss(), 1.0)}
    )
    out = {"seg": torch.randn(2, 3, 4, 4, 4), "age": torch.randn(2, 1), "own": torch.randn(2, 5)}
    y = {"seg": torch.randint(0, 3, (2, 4, 4, 4)), "age": torch.randn(2, 1), "own": torch.randn(2, 5)}
    with pytest.raises(
        ValueError, match=r"cannot tell the task of head 'own' \(OwnLoss.*tasks=\{'own': 'regression'"
    ):
        loss.head_tasks(out, y)
    told = MultiTaskLoss(
        {"seg": (nn.CrossEntropyLoss(), 1.0), "age": (nn.L1Loss(), 1.0), "own": (OwnLoss(), 1.0)},
        tasks={"own": "regression"},
    )
    assert told.head_tasks(out, y) == {"seg": "segmentation", "age": "regression", "own": "regression"}
    with pytest.raises(TypeError, match="head 'age': L1Loss on integer targets"):
        told.head_tasks(out, {**y, "age": torch.ones(2, 1, dtype=torch.long)})


def test_docstring_example_runs():
    assert doctest.testmod(multitask, raise_on_error=False).failed == 0
