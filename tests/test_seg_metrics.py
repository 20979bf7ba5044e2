"""Dice per case and foreground class: agreement with MONAI's DiceMetric, the empty-class policy, one host
read per pass, chance references, what predict writes per case, bad masks named."""

import logging
import math
import weakref

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric
from torch.overrides import TorchFunctionMode

from nbtools.tasks import DiceAccumulator, case_summary, chance_dice, is_segmentation_pair, voxel_volume_ml

HOST_READS = {"cpu", "item", "tolist", "__bool__", "__float__", "__int__", "__index__"}


class HostReads(TorchFunctionMode):
    """Records every tensor method that brings a value to the host."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _cases(n=7, c=4, seed=0, shape=(9, 10, 8)):
    """Predictions and masks with every kind of empty class: empty in both, only in the mask (a false
    positive), only in the prediction (a miss)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n, *shape), generator=g)
    pred = torch.randint(0, c, (n, *shape), generator=g)
    pred = torch.where(torch.rand(y.shape, generator=g) < 0.4, y, pred)  # better than chance
    y[1][y[1] == 2] = 0  # class 2: empty mask, predicted anyway
    y[2][y[2] == 3], pred[2][pred[2] == 3] = 0, 0  # class 3: empty in both
    pred[3][pred[3] == 1] = 0  # class 1: present, never predicted
    return pred, y


def _monai(pred, y, c, reduction):
    metric = DiceMetric(include_background=False, ignore_empty=True, num_classes=c, reduction=reduction)
    metric(pred.unsqueeze(1), y.unsqueeze(1))
    return metric.aggregate()


def test_agrees_with_monai_dice_metric_batch_by_batch():
    pred, y = _cases()
    acc = DiceAccumulator(4, ["background", "grey matter", "white matter", "csf"])
    for sl in (slice(0, 3), slice(3, 4), slice(4, 7)):  # uneven batches
        acc.update(pred[sl], y[sl])
    out = acc.compute()
    assert out["val_dice"] == pytest.approx(_monai(pred, y, 4, "mean").item(), abs=1e-6)
    per_class = _monai(pred, y, 4, "mean_batch")
    for name, ref in zip(["grey_matter", "white_matter", "csf"], per_class.tolist()):
        assert out[f"val_dice_{name}"] == pytest.approx(ref, abs=1e-6)
    assert out["val_dice_left_out"] == 2  # case 1 class 2 and case 2 class 3, as MONAI leaves them out
    assert out["val_dice_empty_predicted"] == 1  # case 1 class 2: MONAI's policy does not count it
    assert acc.per_case.shape == (7, 3) and math.isnan(acc.per_case[1, 1]) and acc.per_case[3, 0] == 0


def test_logits_and_one_sigmoid_channel_give_the_classes_monai_scores():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 3, 8, 8, generator=g)
    y = torch.randint(0, 3, (5, 8, 8), generator=g)
    acc = DiceAccumulator(3)
    acc.update([z, torch.randn(5, 3, 4, 4)], y)  # a deep-supervision list: its main output (seed 001's crash)
    assert acc.compute()["val_dice"] == pytest.approx(_monai(z.argmax(1), y, 3, "mean").item(), abs=1e-6)
    z1 = torch.randn(5, 1, 8, 8, generator=g)
    y1 = torch.randint(0, 2, (5, 1, 8, 8), generator=g)  # (B, 1, ...) masks as MONAI keeps them
    binary = DiceAccumulator(2)
    binary.update(z1, y1)
    ref = _monai((z1[:, 0] > 0).long(), y1[:, 0], 2, "mean").item()
    assert binary.compute()["val_dice"] == pytest.approx(ref, abs=1e-6)


def test_dice_by_hand_and_the_nnunet_policy_scores_a_false_positive_zero():
    y = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]], [[0, 0, 0, 0]]])
    pred = torch.tensor([[[1, 0, 1, 0]], [[0, 1, 0, 0]], [[0, 0, 0, 0]]])
    monai, nnunet = DiceAccumulator(2), DiceAccumulator(2, empty="nnunet")
    for acc in (monai, nnunet):
        acc.update(pred, y)
    m, n = monai.compute(), nnunet.compute()
    # case 0: tp 1, fp 1, fn 1 -> 2/4; case 1: empty mask, 1 voxel predicted; case 2: empty in both
    assert m["val_dice"] == 0.5 and m["val_dice_left_out"] == 2 and m["val_dice_empty_predicted"] == 1
    assert n["val_dice"] == 0.25 and n["val_dice_left_out"] == 1 and n["val_dice_empty_predicted"] == 1
    np.testing.assert_array_equal(nnunet.per_case[:, 0], [0.5, 0.0, np.nan])


def test_no_foreground_anywhere_is_nan_with_a_warning(caplog):
    acc = DiceAccumulator(2)
    acc.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long))
    with caplog.at_level(logging.WARNING):
        out = acc.compute()
    assert math.isnan(out["val_dice"]) and out["val_dice_left_out"] == 2
    assert "val_dice is undefined" in caplog.text


def test_updates_keep_counts_on_the_device_and_compute_reads_once():
    g = torch.Generator().manual_seed(2)
    acc = DiceAccumulator(3)
    kept = []
    with HostReads() as reads:
        for _ in range(4):
            z = torch.randn(2, 3, 16, 16, 16, generator=g)
            kept.append(weakref.ref(z))
            acc.update(z, torch.randint(0, 3, (2, 16, 16, 16), generator=g))
            del z
        assert reads.calls == []  # nothing read per batch
        acc.compute()
    assert reads.calls == ["cpu"]
    assert all(r() is None for r in kept)  # the logits are gone: only 3 * C + 2 counts a case remain
    assert acc.counts().shape == (8, 3 * 3 + 2)


def test_chance_references_are_the_dice_of_constant_predictions():
    pred, y = _cases(c=3, n=5)
    acc = DiceAccumulator(3, ["background", "liver", "tumour"])
    acc.update(pred, y)
    acc.compute()
    ref = chance_dice(acc.tpfpfn, acc.class_names)
    assert ref["background"] == ref["majority"] == 0.0  # background has the most voxels here
    for k, name in enumerate(acc.class_names):  # the same number the metric gives a constant prediction
        constant = DiceAccumulator(3)
        constant.update(torch.full_like(y, k), y)
        assert ref[name] == pytest.approx(constant.compute()["val_dice"])
    # all "liver": 2 f / (1 + f) for liver, 0 for tumour where a case has tumour (NaN where not)
    f = (y == 1).flatten(1).double().mean(1)
    defined = 1 + (y == 2).flatten(1).any(1).double()
    assert ref["liver"] == pytest.approx((2 * f / (1 + f) / defined).mean().item())


def test_majority_is_the_class_with_most_voxels():
    y = torch.ones(2, 6, 6, dtype=torch.long)
    y[:, :1] = 0
    acc = DiceAccumulator(2)
    acc.update(y, y)
    acc.compute()
    ref = chance_dice(acc.tpfpfn, ["background", "organ"])
    assert ref["majority"] == ref["organ"] == pytest.approx(2 * (5 / 6) / (1 + 5 / 6))


def test_case_summary_counts_voxels_measures_ml_and_scores_dice():
    affine = np.diag([0.5, 2.0, 2.0, 1.0])  # 2 mm^3 a voxel
    assert voxel_volume_ml(affine) == pytest.approx(0.002)
    mask = np.zeros((4, 4, 4), dtype=np.uint8)
    mask[0, :2] = 1  # 8 voxels
    mask[3] = 2  # 16 voxels
    truth = mask.copy()
    truth[3] = 0
    row = case_summary(mask, ["background", "left lung", "tumour"], voxel_volume_ml(affine), truth)
    assert row["voxels_left_lung"] == 8 and row["voxels_tumour"] == 16
    assert row["ml_left_lung"] == pytest.approx(0.016) and row["ml_tumour"] == pytest.approx(0.032)
    assert row["dice_left_lung"] == 1.0 and math.isnan(row["dice_tumour"])  # empty mask: NaN (monai)
    assert case_summary(mask, ["background", "a", "b"], truth=truth, empty="nnunet")["dice_b"] == 0.0
    assert set(case_summary(mask, ["bg", "a", "b"])) == {"voxels_a", "voxels_b"}
    with pytest.raises(ValueError, match=r"outside the classes 0..1"):
        case_summary(mask, ["bg", "a"])


def test_bad_masks_are_named():
    acc = DiceAccumulator(3)
    acc.update(
        torch.zeros(2, 4, 4, dtype=torch.long), torch.tensor([[[0] * 4] * 4, [[0, 0, 0, 7]] + [[0] * 4] * 3])
    )
    with pytest.raises(ValueError, match=r"case 1 .* 1 voxels in its masks outside the classes 0..2"):
        acc.compute()
    with pytest.raises(TypeError, match=r"integer class maps, got torch.float32.*nearest"):
        acc.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match=r"masks \(1, 4, 5\) do not fit predictions \(1, 4, 4\)"):
        acc.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits \(B, 3, \*spatial\).*\(1, 2, 4, 4\)"):
        acc.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no validation cases"):
        DiceAccumulator(2).compute()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1,), "num_classes must be an int >= 2"),
        ((3, ["bg", "a"]), "2 names for 3 classes"),
        ((3, ["bg", "grey matter", "grey-matter"]), "repeated"),
        ((2, ["bg", "left_out"]), "rename those classes"),
        ((2, None, "smp"), "empty must be one of"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        DiceAccumulator(*args)


def test_is_segmentation_pair():
    z = torch.zeros(2, 3, 8, 8)
    assert is_segmentation_pair(z, torch.zeros(2, 8, 8, dtype=torch.long))
    assert is_segmentation_pair(z, torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    assert not is_segmentation_pair(z, torch.zeros(2, 8, 8))  # float masks
    assert not is_segmentation_pair(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))  # classification
    assert not is_segmentation_pair(z, torch.zeros(2, 4, 4, dtype=torch.long))
