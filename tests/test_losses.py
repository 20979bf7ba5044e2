"""nbtools.losses: agreement with references and hand computations, finite at extreme logits, clear errors."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from nbtools.losses import (
    ComboLoss,
    DeepSupervisionLoss,
    DiceLoss,
    FocalLoss,
    LDAMLoss,
    LogCoshDiceLoss,
    log_cosh,
    main_output,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def close(a, b, **kw):
    torch.testing.assert_close(a, b, **kw)


# --- focal -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("logit_shape", [(16,), (16, 1)])
@pytest.mark.parametrize("target_dtype", [torch.int64, torch.float32])
def test_focal_gamma0_is_bce(logit_shape, target_dtype):
    z = torch.randn(logit_shape, generator=gen()) * 3
    y = torch.randint(0, 2, (16,), generator=gen(1)).to(target_dtype)
    ours = FocalLoss(gamma=0.0, alpha=None)(z, y)
    close(ours, F.binary_cross_entropy_with_logits(z.reshape(16), y.float()))


@pytest.mark.parametrize("shape", [(16, 5), (4, 5, 3, 3)])
def test_focal_gamma0_is_cross_entropy(shape):
    z = torch.randn(shape, generator=gen()) * 3
    y = torch.randint(0, 5, (shape[0], *shape[2:]), generator=gen(1))
    close(FocalLoss(gamma=0.0)(z, y), F.cross_entropy(z, y))
    close(FocalLoss(gamma=0.0, reduction="none")(z, y), F.cross_entropy(z, y, reduction="none"))


@pytest.mark.parametrize("alpha", [0.25, 0.9, None])
@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_matches_torchvision(alpha, gamma, reduction):
    z = torch.randn(64, generator=gen()) * 4
    y = torch.randint(0, 2, (64,), generator=gen(1)).float()
    ours = FocalLoss(gamma=gamma, alpha=alpha, reduction=reduction)(z.unsqueeze(1), y)
    ref = torchvision.ops.sigmoid_focal_loss(
        z, y, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction=reduction
    )
    close(ours, ref)


def test_focal_matches_torchvision_soft_and_multilabel_targets():
    z = torch.randn(8, 3, generator=gen()) * 4
    y = torch.rand(8, 3, generator=gen(1))  # soft labels, e.g. label smoothing
    ref = torchvision.ops.sigmoid_focal_loss(z, y, alpha=0.25, gamma=2.0, reduction="none")
    close(FocalLoss(gamma=2.0, alpha=0.25, reduction="none")(z, y), ref)


def test_focal_per_class_alpha_by_hand():
    z = torch.randn(10, 4, generator=gen()) * 2
    y = torch.randint(0, 4, (10,), generator=gen(1))
    alpha, gamma = [0.1, 0.2, 0.3, 0.4], 2.0
    p_t = torch.softmax(z, dim=1)[torch.arange(10), y]
    expected = torch.tensor(alpha)[y] * (1 - p_t) ** gamma * -torch.log(p_t)
    close(FocalLoss(gamma=gamma, alpha=alpha, reduction="none")(z, y), expected)
    close(FocalLoss(gamma=gamma, alpha=alpha)(z, y), expected.mean())


def test_focal_hardest_example_keeps_full_loss_and_gradient():
    # A clamp would cap the loss and give these examples zero gradient.
    z = torch.tensor([-1e4, 1e4, 1e4], requires_grad=True)
    y = torch.tensor([1, 0, 1])
    loss = FocalLoss(gamma=2.0, reduction="sum")(z, y)
    close(loss, torch.tensor(2e4))
    loss.backward()
    close(z.grad, torch.tensor([-1.0, 1.0, 0.0]))


# --- log-cosh and dice -----------------------------------------------------------------------------


def test_log_cosh_matches_naive_where_finite():
    x = torch.linspace(-88, 88, 20001)
    naive = torch.log(torch.cosh(x))
    assert naive.isfinite().all()
    close(log_cosh(x), naive, atol=2e-6, rtol=1e-6)
    wide = torch.linspace(-700, 700, 20001, dtype=torch.float64)  # float64 reference past float32 overflow
    close(log_cosh(wide), torch.log(torch.cosh(wide)).float(), atol=1e-4, rtol=1e-6)


def test_log_cosh_finite_with_tanh_gradient_at_extremes():
    x = torch.tensor([-1e4, -50.0, -0.5, 0.0, 0.5, 50.0, 1e4], requires_grad=True)
    y = log_cosh(x)
    assert y.dtype == torch.float32 and y.isfinite().all()
    close(y[[0, -1]], torch.tensor([1e4 - math.log(2)] * 2))
    y.sum().backward()
    close(x.grad, torch.tanh(x.detach()))
    assert log_cosh(torch.tensor([1e4], dtype=torch.bfloat16)).dtype == torch.float32


def test_dice_by_hand_binary():
    z = torch.tensor([[[2.0, -1.0, 0.5]]])  # (B=1, C=1, 3)
    y = torch.tensor([[1, 0, 1]])
    p = torch.sigmoid(z[0, 0])
    inter, total = p[0] + p[2], p.sum() + 2
    close(DiceLoss(smooth=1.0)(z, y), 1 - (2 * inter + 1) / (total + 1))
    close(DiceLoss(smooth=0.1)(z, y), 1 - (2 * inter + 0.1) / (total + 0.1))


def test_dice_class_map_equals_one_hot_and_uses_softmax():
    z = torch.randn(2, 3, 5, 5, generator=gen())
    y = torch.randint(0, 3, (2, 5, 5), generator=gen(1))
    onehot = F.one_hot(y, 3).permute(0, 3, 1, 2).float()
    loss = DiceLoss(reduction="none")(z, y)
    close(loss, DiceLoss(reduction="none")(z, onehot))
    p = torch.softmax(z, dim=1)
    expected = 1 - (2 * (p * onehot).sum((2, 3)) + 1) / (p.sum((2, 3)) + onehot.sum((2, 3)) + 1)
    close(loss, expected)


def test_dice_perfect_prediction_is_zero():
    y = torch.randint(0, 3, (2, 6, 6), generator=gen())
    z = (F.one_hot(y, 3).permute(0, 3, 1, 2).float() * 2 - 1) * 1e4
    close(DiceLoss()(z, y), torch.tensor(0.0))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_log_cosh_dice_equals_naive(reduction):
    z = torch.randn(3, 2, 4, 4, generator=gen())
    y = torch.randint(0, 2, (3, 4, 4), generator=gen(1))
    dice = DiceLoss(smooth=0.5, reduction=reduction)(z, y)
    close(LogCoshDiceLoss(smooth=0.5, reduction=reduction)(z, y), torch.log(torch.cosh(dice)))


# --- LDAM ------------------------------------------------------------------------------------------


def test_ldam_by_hand():
    # margins ∝ n^-1/4: [100^-0.25, 1] scaled so the largest is 0.4 -> [0.4 / sqrt(10), 0.4]
    loss = LDAMLoss([100, 1], max_margin=0.4, scale=2.0, reduction="none")
    close(loss.margins, torch.tensor([0.4 / math.sqrt(10), 0.4]))
    z = torch.tensor([[1.0, 2.0], [0.5, -0.5]])
    y = torch.tensor([1, 0])
    adjusted = torch.tensor([[1.0, 2.0 - 0.4], [0.5 - 0.4 / math.sqrt(10), -0.5]]) * 2.0
    expected = -torch.log_softmax(adjusted, dim=1)[torch.arange(2), y]
    close(loss(z, y), expected)


def test_ldam_weight_takes_effect():
    z = torch.randn(6, 3, generator=gen())
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    w = [1.0, 2.0, 5.0]
    plain = LDAMLoss([50, 20, 5], reduction="none")(z, y)
    weighted = LDAMLoss([50, 20, 5], weight=w)(z, y)
    wt = torch.tensor(w)[y]
    close(weighted, (wt * plain).sum() / wt.sum())


# --- extreme logits, fp32 and bf16 autocast --------------------------------------------------------


def extreme_case(n_classes, spatial=()):
    """Logits of +-1e4 (the predicted class +1e4), targets sometimes the predicted class, sometimes not."""
    k = max(n_classes, 2)
    n = 6 * math.prod(spatial)
    pred = (torch.arange(n) % k).reshape(6, *spatial)
    target = (torch.arange(n) // 2 % k).reshape(6, *spatial)
    if n_classes == 1:
        return torch.where(pred == 1, 1e4, -1e4).unsqueeze(1), target
    return torch.where(F.one_hot(pred, k).movedim(-1, 1).bool(), 1e4, -1e4), target


EXTREME = {
    "focal-binary": (lambda: FocalLoss(gamma=2.0, alpha=0.25), 1, ()),
    "focal-classes": (lambda: FocalLoss(gamma=2.0, alpha=[0.2, 0.3, 0.5]), 3, ()),
    "focal-dense": (lambda: FocalLoss(gamma=0.5), 3, (2, 2)),
    "dice": (lambda: DiceLoss(), 3, (2, 2)),
    "lcdice": (lambda: LogCoshDiceLoss(), 1, (2, 2)),
    "ldam": (lambda: LDAMLoss([100, 10, 1]), 3, ()),
}


@pytest.mark.parametrize("name", EXTREME)
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_finite_at_extreme_logits(name, autocast):
    make, n_classes, spatial = EXTREME[name]
    logits, y = extreme_case(n_classes, spatial)
    raw = logits.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = make()(raw.to(torch.bfloat16) if autocast else raw, y)
    assert loss.dtype == torch.float32
    assert loss.isfinite().all(), loss
    loss.backward()
    assert raw.grad.isfinite().all(), raw.grad


# --- combining -------------------------------------------------------------------------------------


def test_combo_is_weighted_sum_and_parts_are_unweighted():
    z = torch.randn(2, 1, 4, 4, generator=gen())
    y = torch.randint(0, 2, (2, 4, 4), generator=gen(1))
    focal, dice = FocalLoss(gamma=2.0), DiceLoss()
    combo = ComboLoss({"focal": (focal, 0.7), "dice": (dice, 0.3)})
    before = dict(vars(combo))
    parts = combo.parts(z, y)
    assert set(parts) == {"focal", "dice"}
    close(parts["focal"], focal(z, y))
    close(parts["dice"], dice(z, y))
    close(combo(z, y), 0.7 * focal(z, y) + 0.3 * dice(z, y))
    assert vars(combo) == before  # forward keeps nothing on self


def test_deep_supervision_resizes_segmentation_targets():
    base = DiceLoss()
    y = torch.randint(0, 3, (2, 8, 8), generator=gen())
    main, aux = torch.randn(2, 3, 8, 8, generator=gen(1)), torch.randn(2, 3, 4, 4, generator=gen(2))
    loss = DeepSupervisionLoss(base, weights=[1.0, 0.5])([main, aux], y)
    # nearest-neighbour at half size takes the pixel whose centre is nearest: indices 1, 3, 5, 7
    close(loss, base(main, y) + 0.5 * base(aux, y[:, 1::2, 1::2]))
    onehot = F.one_hot(y, 3).permute(0, 3, 1, 2).float()
    close(DeepSupervisionLoss(base, weights=[1.0, 0.5])((main, aux), onehot), loss)


def test_deep_supervision_classification_and_bare_tensor():
    base = FocalLoss(gamma=2.0)
    y = torch.randint(0, 4, (5,), generator=gen())
    outs = [torch.randn(5, 4, generator=gen(i)) for i in range(3)]
    loss = DeepSupervisionLoss(base, weights=[1.0, 0.3, 0.1])
    close(loss(outs, y), base(outs[0], y) + 0.3 * base(outs[1], y) + 0.1 * base(outs[2], y))
    close(loss(outs[0], y), base(outs[0], y))


def test_deep_supervision_count_mismatch_names_both_counts():
    with pytest.raises(ValueError, match=r"3 outputs .* 2 weights"):
        DeepSupervisionLoss(DiceLoss(), weights=[1.0, 0.5])(
            [torch.randn(1, 1, 4, 4)] * 3, torch.zeros(1, 4, 4)
        )


def test_main_output():
    t = torch.zeros(2)
    assert main_output(t) is t
    assert main_output([(t, 1), 2]) is t
    with pytest.raises(ValueError, match="empty"):
        main_output([])
    with pytest.raises(TypeError, match="int"):
        main_output([3])


def test_loss_given_a_list_points_to_deep_supervision():
    with pytest.raises(TypeError, match="DeepSupervisionLoss"):
        FocalLoss()([torch.randn(2, 1), torch.randn(2, 1)], torch.zeros(2))


# --- reductions, errors, devices -------------------------------------------------------------------

ALL = {
    "focal": (lambda r: FocalLoss(reduction=r), (4, 3, 2, 2), (4, 2, 2)),
    "dice": (lambda r: DiceLoss(reduction=r), (4, 3, 2, 2), (4, 2, 2)),
    "lcdice": (lambda r: LogCoshDiceLoss(reduction=r), (4, 3), (4,)),
    "ldam": (lambda r: LDAMLoss([5, 3, 1], reduction=r), (4, 3), (4,)),
}


@pytest.mark.parametrize("name", ALL)
def test_reductions(name):
    make, zs, ys = ALL[name]
    z, y = torch.randn(zs, generator=gen()), torch.randint(0, 3, ys, generator=gen(1))
    per = make("none")(z, y)
    if name == "lcdice":  # log-cosh of the reduced Dice loss
        dice = DiceLoss(reduction="none")(z, y)
        close(make("mean")(z, y), log_cosh(dice.mean()))
        close(make("sum")(z, y), log_cosh(dice.sum()))
        return
    assert per.shape == ((4, 3) if name == "dice" else ys)
    close(make("sum")(z, y), per.sum())
    close(make("mean")(z, y), per.mean())


BAD_SHAPES = [
    (FocalLoss(), (4, 1), (5,)),
    (FocalLoss(), (4, 3), (4, 3, 2)),
    (FocalLoss(), (4, 3), (5,)),
    (DiceLoss(), (2, 3, 4, 4), (2, 4, 5)),
    (LogCoshDiceLoss(), (2, 1, 4, 4), (2, 2, 4, 4)),
    (LDAMLoss([3, 2, 1]), (4, 2), (4,)),
    (LDAMLoss([3, 2, 1]), (4, 3), (4, 1)),
]


@pytest.mark.parametrize("loss, zs, ys", BAD_SHAPES)
def test_bad_shapes_name_both_shapes(loss, zs, ys):
    with pytest.raises(ValueError) as e:
        loss(torch.randn(zs), torch.zeros(ys, dtype=torch.int64))
    assert str(zs) in str(e.value) and str(ys) in str(e.value)


def test_bad_target_dtype_and_alpha_kind():
    with pytest.raises(ValueError, match="int64"):
        FocalLoss()(torch.randn(4, 3), torch.rand(4))
    with pytest.raises(ValueError, match="one weight per class"):
        FocalLoss(alpha=0.25)(torch.randn(4, 3), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="4 values"):
        FocalLoss(alpha=[1.0] * 4)(torch.randn(4, 3), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="scalar alpha"):
        FocalLoss(alpha=[1.0, 2.0])(torch.randn(4), torch.zeros(4))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: FocalLoss(gamma=-1.0), "gamma"),
        (lambda: FocalLoss(alpha=1.5), r"alpha.*\[0, 1\]"),
        (lambda: FocalLoss(alpha=[0.5, -1.0]), r"alpha\[1\]"),
        (lambda: FocalLoss(reduction="avg"), r"'mean', 'sum', 'none', got 'avg'"),
        (lambda: DiceLoss(smooth=0.0), "smooth"),
        (lambda: LogCoshDiceLoss(reduction="max"), "'max'"),
        (lambda: LDAMLoss([10, 0, 3]), r"class_counts\[1\] is 0"),
        (lambda: LDAMLoss([10, 5, -2]), r"class_counts\[2\]"),
        (lambda: LDAMLoss([10, 5], weight=[1.0, 1.0, 1.0]), "3 values .* 2"),
        (lambda: LDAMLoss([10, 5], scale=0), "scale"),
        (lambda: ComboLoss({"a": (DiceLoss(), float("nan"))}), "weight of part 'a'"),
        (lambda: ComboLoss({"a": DiceLoss()}), r"parts\['a'\]"),
        (lambda: DeepSupervisionLoss(DiceLoss(), weights=[]), "one number per output"),
    ],
)
def test_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


META = [
    (lambda: FocalLoss(alpha=0.25), (4, 1), (4,)),
    (lambda: FocalLoss(alpha=[0.2, 0.3, 0.5]), (4, 3, 2, 2), (4, 2, 2)),
    (lambda: DiceLoss(), (4, 3, 2, 2), (4, 2, 2)),
    (lambda: LogCoshDiceLoss(), (4, 1, 2, 2), (4, 2, 2)),
    (lambda: LDAMLoss([5, 3, 1], weight=[1, 2, 3]), (4, 3), (4,)),
    (lambda: ComboLoss({"f": (FocalLoss(alpha=[1, 1, 1]), 1.0), "d": (DiceLoss(), 1.0)}), (4, 3), (4,)),
    (lambda: DeepSupervisionLoss(FocalLoss(alpha=[1, 1, 1]), [1.0, 0.5]), (4, 3, 4, 4), (4, 4, 4)),
]


@pytest.mark.parametrize("make, zs, ys", META)
@pytest.mark.parametrize("move", [True, False], ids=["moved", "left-on-cpu"])
def test_losses_follow_the_logits_device(make, zs, ys, move):
    # On "meta" any tensor made on the CPU in forward would raise a device mismatch.
    loss = make().to("meta") if move else make()
    z = torch.empty(zs, device="meta")
    y = torch.empty(ys, dtype=torch.int64, device="meta")
    if isinstance(loss, DeepSupervisionLoss):
        z = [z, torch.empty((*zs[:2], 2, 2), device="meta")]
    out = loss(z, y)
    assert out.device.type == "meta" and out.dtype == torch.float32
    if move:
        assert all(b.device.type == "meta" for b in loss.buffers())


def test_losses_are_modules_with_buffers_only():
    for loss in (FocalLoss(alpha=[1.0, 2.0]), LDAMLoss([3, 1], weight=[1, 1])):
        assert isinstance(loss, nn.Module) and not list(loss.parameters())
        assert loss.state_dict() == {}  # derived from the arguments, not saved
