"""Whole-volume segmentation inference: the same numbers as MONAI's sliding_window_inference, flip TTA
that flips each prediction back, the run's autocast, eval mode, and a validation pass with one host read."""

import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

import nbtools as nbt
from nbtools.losses import DeepSupervisionLoss, DiceCELoss
from nbtools.tasks import DiceAccumulator, evaluate_segmentation, sliding_window_predict

from .test_seg_metrics import HostReads


def _unet(**kw):
    torch.manual_seed(0)
    return nbt.models.unet3d(**{"depth": 10, "width": 0.125, "num_classes": 3, "deep_supervision": 2, **kw})


class Ramp(nn.Module):
    """A pointwise conv plus a ramp along the last axis: not flip-equivariant, so a TTA that forgot to
    flip back, or flipped the wrong axis, gives other numbers."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.conv = nn.Conv3d(1, classes, 1)
        self.seen_dtype = None

    def forward(self, x):
        out = self.conv(x)
        self.seen_dtype = out.dtype
        ramp = torch.linspace(-1, 1, x.shape[-1], device=x.device)
        return out + ramp * torch.arange(out.shape[1], device=x.device).view(1, -1, 1, 1, 1)


def test_same_numbers_as_monai_sliding_window_inference():
    model = _unet().eval()
    x = torch.randn(1, 1, 40, 48, 36, generator=torch.Generator().manual_seed(1))
    ours = sliding_window_predict(model, x, (32, 32, 32), output="logits")
    with torch.no_grad():
        ref = sliding_window_inference(
            x, (32, 32, 32), 1, model, overlap=0.5, mode="gaussian", sigma_scale=0.125
        )
    assert ours.shape == (1, 3, 40, 48, 36)  # any size: windows of a multiple of 32, padded and cropped back
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_a_volume_within_one_patch_is_the_model_output_itself():
    model = _unet().eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        direct = model(x)
    torch.testing.assert_close(sliding_window_predict(model, x, (32, 32, 32), output="logits"), direct)


def test_flip_tta_flips_each_prediction_back_before_averaging():
    model = Ramp()
    x = torch.randn(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    plain = sliding_window_predict(model, x, (8, 8, 8), output="logits")
    # the pointwise part is flip-equivariant: flipping along D and H and back changes nothing
    torch.testing.assert_close(
        sliding_window_predict(model, x, (8, 8, 8), flip_axes=(0, 1), output="logits"), plain
    )
    # along W the ramp, flipped back, runs the other way: the average of both is the conv alone
    tta = sliding_window_predict(model, x, (8, 8, 8), flip_axes=(2,), output="logits")
    with torch.no_grad():
        torch.testing.assert_close(tta, model.conv(x))
    assert not torch.allclose(tta, plain)


def test_outputs_probs_mask_and_one_sigmoid_channel():
    model = Ramp(classes=3)
    x = torch.randn(1, 1, 32, 32, 64)
    logits = sliding_window_predict(model, x, (32, 32, 32), output="logits")
    probs = sliding_window_predict(model, x, (32, 32, 32))
    mask = sliding_window_predict(model, x, (32, 32, 32), output="mask")
    torch.testing.assert_close(probs, torch.softmax(logits, 1))
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 32, 32, 64))
    assert mask.dtype == torch.int64 and torch.equal(mask, logits.argmax(1))
    binary = Ramp(classes=1)
    z = sliding_window_predict(binary, x, (32, 32, 32), output="logits")
    torch.testing.assert_close(sliding_window_predict(binary, x, (32, 32, 32)), torch.sigmoid(z))
    assert torch.equal(sliding_window_predict(binary, x, (32, 32, 32), output="mask"), (z[:, 0] > 0).long())


def test_a_model_in_train_mode_with_deep_supervision_gives_its_main_output_and_stays_in_train_mode():
    model = _unet()
    assert model.training
    out = sliding_window_predict(model, torch.randn(1, 1, 40, 40, 40), (32, 32, 32), output="mask")
    assert isinstance(out, torch.Tensor) and out.shape == (1, 40, 40, 40)
    assert model.training and all(m.training for m in model.modules())


def test_runs_the_model_under_the_autocast_given_and_blends_in_float32():
    model = Ramp()
    x = torch.randn(1, 1, 16, 16, 16)
    out = sliding_window_predict(model, x, (8, 8, 8), autocast=torch.autocast("cpu", dtype=torch.bfloat16))
    assert model.seen_dtype == torch.bfloat16 and out.dtype == torch.float32
    sliding_window_predict(model, x, (8, 8, 8))
    assert model.seen_dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output": "labels"}, "output must be one of"),
        ({"overlap": 1.0}, "overlap must be in"),
        ({"patch": (32, 32)}, "patch must give 3 positive sizes"),
        ({"flip_axes": (3,)}, r"flip_axes must be spatial axes in 0..2"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"patch": (32, 32, 32), **kwargs}
    with pytest.raises(ValueError, match=match):
        sliding_window_predict(Ramp(), torch.zeros(1, 1, 32, 32, 32), **args)


def _val_batches(n_batches=3, side=32, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(2, 1, side, side, side, generator=g),
            torch.randint(0, 3, (2, side, side, side), generator=g),
        )
        for _ in range(n_batches)
    ]


def test_validation_pass_scores_each_case_and_reads_the_host_once():
    model = _unet()
    batches = _val_batches()
    loss_fn = DeepSupervisionLoss(DiceCELoss(), weights="nnunet")
    with HostReads() as reads:
        metrics, acc = evaluate_segmentation(
            model, batches, 3, "cpu", loss_fn=loss_fn, class_names=["bg", "a", "b"]
        )
    assert reads.calls == ["cpu"]
    assert model.training  # restored

    model.eval()
    ref, losses = DiceAccumulator(3, ["bg", "a", "b"]), []
    with torch.no_grad():
        for x, y in batches:
            z = model(x)
            ref.update(z, y)
            losses.append(loss_fn(z, y).item())
    expected = ref.compute()
    assert set(metrics) == {*expected, "val_loss"}
    for k, v in expected.items():
        assert metrics[k] == pytest.approx(v, abs=1e-12), k
    assert metrics["val_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    assert acc.per_case.shape == (6, 2)


def test_validation_volumes_larger_than_the_patch_go_whole_through_the_sliding_window():
    model = Ramp(classes=3)
    batches = _val_batches(n_batches=1, side=16)
    metrics, _ = evaluate_segmentation(model, batches, 3, "cpu", patch=(8, 8, 8))
    ref = DiceAccumulator(3)
    x, y = batches[0]
    ref.update(sliding_window_predict(model, x, (8, 8, 8), output="logits"), y)
    assert metrics["val_dice"] == pytest.approx(ref.compute()["val_dice"], abs=1e-12)
    assert "val_loss" not in metrics
