"""The segmentation loss: Dice + CE (focal, log-cosh Dice) against MONAI's DiceCELoss, deep-supervision
weight presets, per-output terms for telemetry, finite at extreme logits under bf16 autocast."""

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss as MonaiDiceCELoss

from nbtools.losses import (
    DeepSupervisionLoss,
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    deep_supervision_weights,
    log_cosh,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def close(a, b, **kw):
    torch.testing.assert_close(
        torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), **kw
    )


def test_nnunet_preset_halves_drops_the_lowest_and_sums_to_one():
    close(deep_supervision_weights(4, "nnunet"), [4 / 7, 2 / 7, 1 / 7, 0.0])
    assert [round(w, 3) for w in deep_supervision_weights(4)] == [0.571, 0.286, 0.143, 0.0]  # the default
    close(sum(deep_supervision_weights(5)), 1.0)
    assert deep_supervision_weights(1) == (1.0,)
    assert deep_supervision_weights(2) == (1.0, 0.0)


def test_exp_preset_is_monais_unnormalised_with_its_floor():
    assert deep_supervision_weights(4, "exp") == (1.0, 0.5, 0.25, 0.125)
    assert deep_supervision_weights(6, "exp") == (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0625)
    from monai.losses import DeepSupervisionLoss as MonaiDS

    assert tuple(MonaiDS(DiceLoss(), weight_mode="exp").get_weights(6)) == deep_supervision_weights(6, "exp")


@pytest.mark.parametrize(
    ("args", "match"), [((4, "nnU-Net"), "one of"), ((0, "exp"), "n_outputs"), ((True,), "n_outputs")]
)
def test_bad_preset_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        deep_supervision_weights(*args)
    with pytest.raises(ValueError, match="one of"):
        DeepSupervisionLoss(DiceLoss(), weights="nnU-Net")  # refused when built, not at the first step


def _ds_case(n_classes: int = 3, side: int = 16, levels: int = 4):
    outs = [torch.randn(2, n_classes, *(side >> i,) * 3, generator=gen(i)) for i in range(levels)]
    y = torch.randint(0, n_classes, (2, side, side, side), generator=gen(9))
    return outs, y


@pytest.mark.parametrize("preset", ["nnunet", "exp"])
def test_deep_supervision_preset_sums_each_output_against_the_target_downsampled_by_nearest(preset):
    outs, y = _ds_case()
    base = DiceCELoss()
    loss = DeepSupervisionLoss(base, weights=preset)
    expected = 0.0
    for i, (w, out) in enumerate(zip(deep_supervision_weights(4, preset), outs)):
        # nearest-exact at factor 2^i picks the voxel at the centre of each 2^i block
        step = 2**i
        small = y[:, step // 2 :: step, step // 2 :: step, step // 2 :: step] if i else y
        expected = expected + w * base(out, small)
    close(loss(outs, y), expected)
    close(loss(outs[0], y), base(outs[0], y))  # eval mode: the main output alone, weight 1


def test_per_output_terms_come_with_the_total_and_nothing_is_kept_on_self():
    outs, y = _ds_case()
    base = DiceCELoss()
    loss = DeepSupervisionLoss(base, weights="nnunet")
    before = dict(vars(loss))
    total, terms = loss.with_terms(outs, y)
    assert vars(loss) == before
    names = ["main", "aux1", "aux2", "aux3"]
    assert list(terms) == [
        n for name in names for n in (name, f"{name}.dice", f"{name}.ce")
    ]  # fmt: skip
    assert all(t.dim() == 0 and t.device == outs[0].device for t in terms.values())
    close(total, loss(outs, y))
    close(total, sum(w * terms[n] for w, n in zip(deep_supervision_weights(4), names)))
    for n in names:
        close(terms[n], terms[f"{n}.dice"] + terms[f"{n}.ce"])
    assert terms["aux3"] > 0  # the weight-0 output is still measured
    # the terms stay in the graph: one term's gradient reaches its own output only
    outs = [o.requires_grad_() for o in outs]
    _, terms = loss.with_terms(outs, y)
    terms["aux1.dice"].backward()
    assert [o.grad is not None and bool(o.grad.abs().sum() > 0) for o in outs] == [False, True, False, False]


@pytest.mark.parametrize("include_background", [False, True])
def test_dice_ce_agrees_with_monai(include_background):
    z = torch.randn(2, 3, 12, 10, 8, generator=gen(1)) * 3
    y = torch.randint(0, 3, (2, 12, 10, 8), generator=gen(2))
    y[0, :6] = 0  # uneven class sizes
    ours = DiceCELoss(include_background=include_background)(z, y)
    monai = MonaiDiceCELoss(
        include_background=include_background, to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5
    )(z, y.unsqueeze(1))
    close(ours, monai, rtol=1e-6, atol=1e-6)


def test_dice_ce_agrees_with_monai_on_one_sigmoid_channel():
    z = torch.randn(3, 1, 16, 16, generator=gen(3)) * 2
    y = torch.randint(0, 2, (3, 16, 16), generator=gen(4))
    monai = MonaiDiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)(z, y.unsqueeze(1).float())
    close(DiceCELoss()(z, y), monai, rtol=1e-6, atol=1e-6)


def test_dice_without_background_is_the_foreground_columns():
    z = torch.randn(2, 4, 8, 8, generator=gen(5))
    y = torch.randint(0, 4, (2, 8, 8), generator=gen(6))
    full = DiceLoss(reduction="none")(z, y)
    fg = DiceLoss(reduction="none", include_background=False)(z, y)
    assert fg.shape == (2, 3)
    close(fg, full[:, 1:])


def test_variants_focal_and_log_cosh_dice_take_effect():
    z = torch.randn(2, 3, 8, 8, 8, generator=gen(7))
    y = torch.randint(0, 3, (2, 8, 8, 8), generator=gen(8))
    loss = DiceCELoss(gamma=2.0, log_cosh=True, dice_weight=0.3, ce_weight=0.7)
    total, parts = loss.with_terms(z, y)
    assert set(parts) == {"log_cosh_dice", "focal"}
    close(parts["focal"], FocalLoss(gamma=2.0)(z, y))
    close(parts["log_cosh_dice"], log_cosh(DiceLoss(smooth=1e-5, include_background=False)(z, y)))
    close(total, 0.3 * parts["log_cosh_dice"] + 0.7 * parts["focal"])
    alpha = [0.2, 1.0, 3.0]
    close(DiceCELoss(alpha=alpha).parts(z, y)["ce"], FocalLoss(gamma=0.0, alpha=alpha)(z, y))
    with pytest.raises(ValueError, match="one weight per class"):
        DiceCELoss(alpha=0.25)


def test_cross_entropy_shortcut_equals_the_definition():
    z = torch.randn(4, 3, 5, 5, generator=gen(10))
    y = torch.randint(0, 3, (4, 5, 5), generator=gen(11))
    alpha = torch.tensor([0.5, 2.0, 1.0])
    got = FocalLoss(gamma=0.0, alpha=alpha.tolist(), reduction="none")(z, y)
    close(got, alpha[y] * F.cross_entropy(z, y, reduction="none"))
    zb, yb = torch.randn(6, generator=gen(12)), torch.randint(0, 2, (6,), generator=gen(13)).float()
    got = FocalLoss(gamma=0.0, alpha=0.25, reduction="none")(zb, yb)
    close(got, (0.25 * yb + 0.75 * (1 - yb)) * F.binary_cross_entropy_with_logits(zb, yb, reduction="none"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: DiceCELoss(),
        lambda: DiceCELoss(gamma=2.0, log_cosh=True),
        lambda: DiceCELoss(include_background=True),
    ],
    ids=["dice-ce", "logcosh-focal", "with-background"],
)
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_finite_at_extreme_logits_with_deep_supervision(make, autocast):
    y = torch.randint(0, 3, (2, 8, 8, 8), generator=gen(14))
    raws = []
    for i in range(3):  # confidently wrong everywhere: the true class at -1e4, the others at +1e4
        target = F.one_hot(y[:, :: 2**i, :: 2**i, :: 2**i], 3).movedim(-1, 1).bool()
        raws.append(torch.where(target, -1e4, 1e4).requires_grad_())
    loss_fn = DeepSupervisionLoss(make(), weights="nnunet")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        outs = [r.to(torch.bfloat16) if autocast else r for r in raws]
        total, terms = loss_fn.with_terms(outs, y)
    assert total.dtype == torch.float32 and total.isfinite(), total
    assert all(t.isfinite() for t in terms.values()), terms
    total.backward()
    assert all(r.grad.isfinite().all() for r in raws)
    assert raws[0].grad.abs().sum() > 0  # the hardest voxels keep their gradient: nothing was clamped
