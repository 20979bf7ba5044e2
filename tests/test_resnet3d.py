"""resnet3d: shapes, gradients to every parameter, MedicalNet names, and every argument taking effect."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nbtools as nbt
from nbtools.models.resnet3d import BasicBlock3d, Bottleneck3d, PadShortcut

DEPTHS = [10, 18, 34, 50]


def _small(depth: int, **kw) -> nn.Module:
    torch.manual_seed(0)
    return nbt.models.resnet3d(depth=depth, width=0.125, **kw)


@pytest.mark.parametrize("shortcut", ["A", "B"])
@pytest.mark.parametrize("depth", DEPTHS)
def test_forward_shape_and_every_parameter_gets_a_gradient(depth, shortcut):
    model = _small(depth, shortcut=shortcut, num_classes=3)
    x = torch.randn(2, 1, 24, 24, 24)
    out = model(x)
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 2])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("depth", DEPTHS)
def test_shortcut_a_has_no_downsample_parameters_and_b_does(depth):
    keys_a = _small(depth, shortcut="A").state_dict().keys()
    keys_b = _small(depth, shortcut="B").state_dict().keys()
    assert not any(".downsample." in k for k in keys_a)
    assert "layer2.0.downsample.0.weight" in keys_b
    assert "layer2.0.downsample.1.weight" in keys_b


def test_default_shortcut_follows_medicalnet_release():
    # MedicalNet released resnet-10/50 with shortcut B and resnet-18/34 with A.
    assert nbt.models.resnet3d(depth=10, width=0.125).shortcut == "B"
    assert nbt.models.resnet3d(depth=18, width=0.125).shortcut == "A"
    assert nbt.models.resnet3d(depth=34, width=0.125).shortcut == "A"
    assert nbt.models.resnet3d(depth=50, width=0.125).shortcut == "B"


def test_pad_shortcut_subsamples_zero_pads_and_passes_gradient():
    x = torch.randn(2, 3, 5, 6, 7, requires_grad=True)
    y = PadShortcut(out_channels=8, stride=2)(x)
    assert y.shape == (2, 8, 3, 3, 4)
    assert torch.equal(y[:, :3], x[:, :, ::2, ::2, ::2])
    assert torch.equal(y[:, 3:], torch.zeros_like(y[:, 3:]))
    y.sum().backward()
    assert x.grad[:, :, ::2, ::2, ::2].eq(1).all()
    assert x.grad.sum() == x[:, :, ::2, ::2, ::2].numel()


def test_medicalnet_parameter_names():
    keys18 = nbt.models.resnet3d(depth=18, shortcut="B", width=0.125).state_dict().keys()
    for key in [
        "conv1.weight",
        "bn1.running_mean",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.weight",
        "layer1.1.conv2.weight",
        "layer4.1.bn2.running_var",
        "fc.weight",
        "fc.bias",
    ]:
        assert key in keys18
    keys50 = nbt.models.resnet3d(depth=50, width=0.125).state_dict().keys()
    assert "layer1.0.conv3.weight" in keys50
    assert "layer1.0.downsample.0.weight" in keys50  # 64 -> 256 channels in layer1 needs a projection


def test_medicalnet_shapes_and_resnet10_size_at_width_1():
    model = nbt.models.resnet3d(depth=10)
    sd = model.state_dict()
    assert sd["conv1.weight"].shape == (64, 1, 7, 7, 7)
    assert sd["layer4.0.conv1.weight"].shape == (512, 256, 3, 3, 3)
    assert sd["layer4.0.downsample.0.weight"].shape == (512, 256, 1, 1, 1)
    assert model.conv1.stride == (2, 2, 2) and model.conv1.padding == (3, 3, 3) and model.conv1.bias is None
    assert sum(p.numel() for p in model.parameters()) == 14_356_546  # "ResNet-10-3D is 14 M params"


@pytest.mark.parametrize("depth", DEPTHS)
def test_norm_layer_reaches_every_block_and_downsample(depth):
    n_bn = sum(isinstance(m, nn.BatchNorm3d) for m in _small(depth, shortcut="B").modules())
    model = _small(depth, shortcut="B", norm_layer=lambda c: nn.GroupNorm(4, c))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == n_bn
    assert isinstance(model.layer2[0].downsample[1], nn.GroupNorm)
    assert model(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2)  # GroupNorm works at batch size 1


def test_dropout_present_and_active_only_in_train_mode():
    model = _small(10, dropout=0.5)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 4 and all(d.p == 0.5 for d in drops)
    calls = []
    for d in drops:
        d.register_forward_hook(lambda mod, inp, out: calls.append(mod))
    x = torch.randn(2, 1, 16, 16, 16)
    model(x)
    assert len(calls) == 4 and {id(m) for m in calls} == {id(d) for d in drops}  # each one is used
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_no_dropout_modules_when_p_is_zero():
    model = _small(10, dropout=0.0)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    x = torch.randn(2, 1, 16, 16, 16)
    assert torch.equal(model.train()(x), model(x))


def test_eval_forward_leaves_the_model_untouched():
    model = _small(18).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.randn(2, 1, 16, 16, 16))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_any_size_from_16_works_and_smaller_raises():
    model = _small(10).eval()
    assert model(torch.randn(1, 1, 16, 40, 23)).shape == (1, 2)
    with pytest.raises(ValueError, match=r"\(2, 1, 15, 32, 32\)"):
        model(torch.randn(2, 1, 15, 32, 32))
    with pytest.raises(ValueError, match=r"in_channels"):
        model(torch.randn(2, 3, 32, 32, 32))
    with pytest.raises(ValueError, match=r"\(1, 32, 32, 32\)"):
        model(torch.randn(1, 32, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"depth": 20}, r"depth .*\[10, 18, 34, 50\].*20"),
        ({"shortcut": "C"}, r"shortcut .*'C'"),
        ({"width": 0}, r"width .*0"),
        ({"dropout": 1.0}, r"dropout .*1\.0"),
        ({"num_classes": 0}, r"num_classes .*0"),
        ({"in_channels": 0}, r"in_channels .*0"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        nbt.models.resnet3d(**{"depth": 10, **kwargs})


def test_kaiming_init_statistics():
    model = nbt.models.resnet3d(depth=10, width=0.5)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv3d) and m.weight.numel() >= 4000:
            fan_out = m.out_channels * math.prod(m.kernel_size)
            assert m.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.1), name
        elif isinstance(m, nn.BatchNorm3d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)), name
            assert torch.equal(m.bias, torch.zeros_like(m.bias)), name
    assert model.fc.weight.std().item() == pytest.approx(1 / math.sqrt(model.fc.in_features), rel=0.2)
    assert torch.equal(model.fc.bias, torch.zeros_like(model.fc.bias))


def test_first_logits_are_order_one():
    # A fan_out/ReLU-initialised 2-class head gives logits with std ~45 here: a loss spike on step one.
    model = _small(50)
    logits = model(torch.randn(8, 1, 32, 32, 32))
    assert logits.std().item() < 5


def test_zero_init_residual_zeroes_the_last_norm_of_every_block():
    for depth in (18, 50):
        model = _small(depth, zero_init_residual=True)
        blocks = [m for m in model.modules() if isinstance(m, (BasicBlock3d, Bottleneck3d))]
        assert blocks
        for b in blocks:
            last = b.bn3 if isinstance(b, Bottleneck3d) else b.bn2
            assert torch.count_nonzero(last.weight) == 0
    assert torch.count_nonzero(_small(18).layer1[0].bn2.weight) > 0
