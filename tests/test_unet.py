"""unet3d / unet2d: shapes in train and eval mode, a gradient for every parameter, MedicalNet and
torchvision weights loading into the encoder with the load report, parameter groups, bad input."""

import pytest
import torch
import torchvision
from torch import nn

import nbtools as nbt
from nbtools.config import TrainConfig
from nbtools.models.unet import STRIDE
from nbtools.train.optim import build_optimizer, group_of
from nbtools.train.unfreeze import apply_unfreeze

GROUPS = {"encoder": 1e-4, "decoder": 1e-3, "heads": 1e-3}


def _unet3d(**kw) -> nn.Module:
    torch.manual_seed(0)
    return nbt.models.unet3d(**{"depth": 10, "width": 0.125, **kw})


def _backward_all(outputs) -> None:
    outs = outputs if isinstance(outputs, list) else [outputs]
    # a random weighting per output and class, so no head's gradient can cancel to zero
    sum((o * torch.randn_like(o)).mean() for o in outs).backward()


def _assert_every_parameter_has_a_gradient(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize(("depth", "ds"), [(10, 3), (18, 4), (50, 1)])
def test_unet3d_train_outputs_each_level_and_every_parameter_gets_a_gradient(depth, ds):
    model = _unet3d(depth=depth, num_classes=3, deep_supervision=ds)
    out = model(torch.randn(2, 1, 32, 32, 32))
    assert isinstance(out, list) and len(out) == ds + 1
    for i, o in enumerate(out):  # main at full size, aux i at 1/2^i, each at its level's own resolution
        assert o.shape == (2, 3, 32 >> i, 32 >> i, 32 >> i)
    _backward_all(out)
    _assert_every_parameter_has_a_gradient(model)


def test_eval_gives_the_main_output_alone_and_deep_supervision_0_a_tensor_in_train_mode():
    model = _unet3d(deep_supervision=3)
    x = torch.randn(2, 1, 32, 32, 32)
    model.eval()
    with torch.no_grad():
        main = model(x)
    assert isinstance(main, torch.Tensor) and main.shape == (2, 2, 32, 32, 32)
    model.train()
    with torch.no_grad():
        outs = model(x)
    assert isinstance(outs, list) and len(outs) == 4

    plain = _unet3d(deep_supervision=0)
    assert "aux1" not in plain.heads
    out = plain(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, 32, 32, 32)
    _backward_all(out)
    _assert_every_parameter_has_a_gradient(plain)


def test_unet2d_shapes_and_gradients():
    torch.manual_seed(0)
    model = nbt.models.unet2d("resnet18", num_classes=4, weights=None, deep_supervision=2, width=0.25)
    out = model(torch.randn(2, 3, 32, 64))
    assert [tuple(o.shape) for o in out] == [(2, 4, 32, 64), (2, 4, 16, 32), (2, 4, 8, 16)]
    _backward_all(out)
    _assert_every_parameter_has_a_gradient(model)
    model.eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 4, 32, 32)


def test_first_logits_are_order_one():
    model = _unet3d(width=0.25).eval()
    with torch.no_grad():
        z = model(torch.randn(2, 1, 32, 32, 32))
    assert 0.05 < z.std().item() < 5


def _medicalnet_file(path, depth: int, width: float) -> dict:
    """A checkpoint in MedicalNet's own format: {"state_dict": ...} saved from a DataParallel model
    ("module." keys) with its conv_seg segmentation head and no fc."""
    torch.manual_seed(7)
    net = nbt.models.resnet3d(depth=depth, width=width)
    state = {f"module.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    seg = nn.Sequential(
        nn.ConvTranspose3d(net.num_features, 32, 2, stride=2),
        nn.BatchNorm3d(32),
        nn.ReLU(),
        nn.Conv3d(32, 32, 3, padding=1, bias=False),
        nn.BatchNorm3d(32),
        nn.ReLU(),
        nn.Conv3d(32, 2, 1, bias=False),
    )
    state |= {f"module.conv_seg.{k}": v for k, v in seg.state_dict().items()}
    torch.save({"epoch": 200, "state_dict": state}, path)
    return {k.removeprefix("module."): v for k, v in state.items() if "conv_seg" not in k}


@pytest.mark.parametrize("depth", [10, 18])
def test_medicalnet_weights_load_into_the_encoder_with_the_report(tmp_path, depth, capsys):
    path = tmp_path / f"resnet_{depth}.pth"
    expected = _medicalnet_file(path, depth, width=0.25)
    model = _unet3d(depth=depth, width=0.25, weights=path)
    rep = model.load_report
    encoder_keys = list(model.encoder.state_dict())
    assert rep.loaded == rep.total == len(encoder_keys) == len(expected)
    assert rep.missing == [] and rep.mismatched == []
    assert rep.unexpected and all(k.startswith("conv_seg.") for k in rep.unexpected)
    assert f"loaded {rep.total}/{rep.total} tensors from {path}" in capsys.readouterr().out
    # keys unchanged under "encoder.": every MedicalNet tensor sits at encoder.<its key>
    state = model.state_dict()
    for k, v in expected.items():
        assert torch.equal(state[f"encoder.{k}"], v), k

    again = _unet3d(depth=depth, width=0.25)
    rep2 = nbt.models.load_pretrained(again.encoder, path, verbose=False)
    assert rep2.loaded == rep.loaded
    assert torch.equal(again.encoder.conv1.weight, model.encoder.conv1.weight)


def test_the_encoder_at_width_1_has_medicalnets_keys_and_shapes():
    encoder = nbt.models.unet3d(depth=10, deep_supervision=0).encoder.state_dict()
    resnet = {k: v for k, v in nbt.models.resnet3d(depth=10).state_dict().items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in encoder.items()} == {k: tuple(v.shape) for k, v in resnet.items()}


def test_torchvision_weights_load_into_the_unet2d_encoder(tmp_path, capsys):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    model = nbt.models.unet2d("resnet18", weights=tmp_path / "resnet18-f37072fd.pth")
    assert torch.equal(model.encoder.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert model.load_report.unexpected == ["fc.weight", "fc.bias"]
    assert model.load_report.missing == []
    assert "loaded" in capsys.readouterr().out


def test_groups_are_encoder_decoder_heads_and_unfreeze_finds_the_encoder_stage_only():
    model = _unet3d(depth=18)
    names = [n for n, _ in model.named_parameters()]
    assert {group_of(n, GROUPS) for n in names} == set(GROUPS)  # no "default": every name has a group
    cfg = TrainConfig(lr=1e-4, group_lrs=GROUPS, unfreeze={3: "layer2"})
    opt = build_optimizer(model, cfg)
    assert sorted(id(p) for g in opt.param_groups for p in g["params"]) == sorted(
        id(p) for p in model.parameters()
    )
    assert {g["name"]: g["lr"] for g in opt.param_groups if g["params"]} == GROUPS

    apply_unfreeze(model, cfg, epoch=1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n in names if n.startswith("encoder.layer2.")}
    apply_unfreeze(model, cfg, epoch=3)
    assert all(p.requires_grad for p in model.parameters())

    apply_unfreeze(model, TrainConfig(unfreeze={2: "encoder"}), epoch=1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n in names if n.startswith("encoder.")}


def test_norm_layer_reaches_encoder_and_decoder():
    model = _unet3d(norm_layer=lambda c: nn.GroupNorm(4, c))
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    assert isinstance(model.decoder["s8"].norm_a, nn.GroupNorm)
    assert isinstance(model.encoder.layer1[0].bn1, nn.GroupNorm)


def test_width_scales_every_part():
    small, large = _unet3d(width=0.125), _unet3d(width=0.25)
    for part in ("encoder", "decoder"):
        n_small = sum(p.numel() for p in getattr(small, part).parameters())
        n_large = sum(p.numel() for p in getattr(large, part).parameters())
        assert n_large > 2.5 * n_small, part


def test_sizes_not_a_multiple_of_the_stride_are_refused_with_the_shape_and_the_fix():
    model = _unet3d().eval()
    with pytest.raises(ValueError, match=rf"multiple of {STRIDE}.*\(1, 1, 40, 32, 32\).*\(64, 32, 32\)"):
        model(torch.zeros(1, 1, 40, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\).*\(1, 3, 32, 32, 32\)"):
        model(torch.zeros(1, 3, 32, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        nbt.models.unet2d(deep_supervision=0).eval()(torch.zeros(1, 32, 32))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: nbt.models.unet3d(width=0.125, deep_supervision=5),
            "deep_supervision must be an int from 0",
        ),
        (lambda: nbt.models.unet3d(width=0.125, deep_supervision=True), "deep_supervision"),
        (lambda: nbt.models.unet3d(width=0.125, num_classes=0), "num_classes must be an int >= 1"),
        (lambda: nbt.models.unet3d(depth=20), "depth must be one of"),
        (lambda: nbt.models.unet2d("vgg16"), "backbone must be one of 'resnet18'"),
        (lambda: nbt.models.unet2d(width=0), "width must be > 0"),
    ],
)
def test_bad_arguments_name_the_value(build, match):
    with pytest.raises(ValueError, match=match):
        build()
