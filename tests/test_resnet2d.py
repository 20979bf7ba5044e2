"""resnet2d_attention: gradients everywhere, parameter groups, weights from a file, offline ImageNet,
prior bias, and every argument taking effect."""

import socket
from urllib.error import URLError

import pytest
import torch
import torch.nn.functional as F
import torchvision

import nbtools as nbt
from nbtools.config import TrainConfig
from nbtools.models.attention import CBAM, SqueezeExcitation
from nbtools.models.imagenet import DOWNLOAD_TIMEOUT
from nbtools.train.optim import build_optimizer, group_of
from nbtools.train.unfreeze import apply_unfreeze

GROUPS = {"backbone": 5e-5, "attention": 2e-4, "classifier": 5e-4}


def _model(**kw):
    torch.manual_seed(0)
    return nbt.models.resnet2d_attention("resnet18", **kw)


@pytest.mark.parametrize("attention", ["se", "cbam"])  # attention=None has a subset of cbam's parameters
def test_every_parameter_gets_a_gradient(attention):
    model = _model(num_classes=3, attention=attention, dropout=0.2)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3)
    F.cross_entropy(out, torch.tensor([0, 2])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_attention_kind_takes_effect():
    assert isinstance(_model(attention="se").attention, SqueezeExcitation)
    assert isinstance(_model(attention="cbam").attention, CBAM)
    plain = _model(attention=None)
    assert not any(n.startswith("attention.") for n, _ in plain.named_parameters())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for kind in ("se", "cbam", None):
            assert _model(attention=kind).eval()(x).shape == (1, 1)


def test_resnet50_attention_sees_2048_channels():
    model = nbt.models.resnet2d_attention("resnet50", attention="se")
    assert model.attention.fc1.in_channels == 2048
    assert model.classifier.fc.in_features == 2048


def test_groups_cover_every_parameter_once_and_unfreeze_finds_layer2():
    model = _model(attention="cbam")
    groups = [group_of(n, GROUPS) for n, _ in model.named_parameters()]
    assert "default" not in groups
    assert set(groups) == set(GROUPS)
    assert "backbone.layer2.0.conv1.weight" in dict(model.named_parameters())

    cfg = TrainConfig(lr=1e-4, group_lrs=GROUPS, unfreeze={8: "layer2"})
    opt = build_optimizer(model, cfg)
    held = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(held) == sorted(id(p) for p in model.parameters())  # each once, none left out
    assert {g["name"]: g["lr"] for g in opt.param_groups if g["params"]} == GROUPS

    apply_unfreeze(model, cfg, epoch=1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("backbone.layer2.") for n in frozen)
    apply_unfreeze(model, cfg, epoch=8)
    assert all(p.requires_grad for p in model.parameters())


def test_dropout_takes_effect():
    model = _model(dropout=0.5).train()
    x = torch.randn(2, 3, 32, 32)
    assert model.classifier.dropout.p == 0.5
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.equal(a, model(x))


def test_torchvision_state_dict_loads_from_a_file(tmp_path, capsys):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)

    model = _model(weights=path)
    rep = model.load_report
    assert rep.unexpected == ["fc.weight", "fc.bias"]
    assert rep.missing == [] and rep.mismatched == []
    assert rep.loaded == rep.total == len(model.backbone.state_dict())
    assert "loaded" in capsys.readouterr().out
    assert torch.equal(model.backbone.layer2[0].conv1.weight, reference.layer2[0].conv1.weight)
    quiet = nbt.models.resnet2d_attention("resnet18", num_classes=1, weights=path, verbose=False)
    assert capsys.readouterr().out == "" and quiet.load_report.loaded == rep.loaded

    # The backbone computes what torchvision's ResNet computes before its pooling.
    reference.eval(), model.eval()
    x = torch.randn(1, 3, 32, 32)
    tv = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
        reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))  # fmt: skip
    torch.testing.assert_close(model.backbone(x), tv)


def test_missing_weights_file_names_the_path_and_the_torchvision_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth.*resnet34-b627a593\.pth"):
        nbt.models.resnet2d_attention("resnet34", weights=tmp_path / "nowhere.pth")


def test_imagenet_offline_fails_fast_with_how_to_pass_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # an empty cache
    seen = []

    def offline(*args, **kwargs):
        seen.append(socket.getdefaulttimeout())
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    before = socket.getdefaulttimeout()
    with pytest.raises(RuntimeError, match="could not download") as err:
        nbt.models.resnet2d_attention("resnet18", weights="imagenet")
    message = str(err.value)
    assert "weights='/path/resnet18-f37072fd.pth'" in message
    assert "~/.cache/torch/hub/checkpoints" in message
    assert "name resolution" in message
    assert isinstance(err.value.__cause__, URLError)
    # What makes it fast, rather than the clock (which a busy machine stretches): one attempt, no retry
    # loop, made under the socket timeout that was set, so a network that drops packets fails too.
    assert seen == [DOWNLOAD_TIMEOUT] and 0 < DOWNLOAD_TIMEOUT <= 60, seen
    assert socket.getdefaulttimeout() == before  # ... which was put back
    assert not list((tmp_path / "hub" / "checkpoints").glob("*"))  # no partial file left behind


def test_imagenet_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    torch.manual_seed(4)
    reference = torchvision.models.resnet18(weights=None)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")

    model = _model(weights="imagenet")
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert model.load_report.unexpected == ["fc.weight", "fc.bias"]
    assert "IMAGENET1K_V1" in capsys.readouterr().out


@pytest.mark.parametrize("prior", [0.3, 0.05])
def test_prior_sets_the_first_predictions_to_the_class_balance(prior):
    model = _model(prior=prior)
    torch.testing.assert_close(torch.sigmoid(model.classifier.fc.bias), torch.tensor([prior]))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert abs(torch.sigmoid(model(x)).mean().item() - prior) < 0.06
        # without it, the first predictions sit near 0.5 whatever the balance
        assert abs(torch.sigmoid(_model()(x)).mean().item() - prior) > 0.1


def test_multiclass_prior_is_the_log_of_the_class_fractions():
    model = _model(num_classes=3, prior=[0.5, 0.3, 0.2])
    torch.testing.assert_close(torch.softmax(model.classifier.fc.bias, 0), torch.tensor([0.5, 0.3, 0.2]))
    with pytest.raises(ValueError, match="3 positive class fractions"):
        _model(num_classes=3, prior=0.3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backbone": "resnet101"}, r"'resnet18', 'resnet34', 'resnet50', got 'resnet101'"),
        ({"attention": "sk"}, r"attention must be one of .*'se'.*'cbam'.*got 'sk'"),
        ({"num_classes": 0}, "num_classes must be an int >= 1"),
        ({"dropout": 1.0}, r"dropout must be a probability in \[0, 1\), got 1.0"),
        ({"prior": 1.5}, r"float in \(0, 1\), got 1.5"),
    ],
)
def test_bad_arguments_name_the_value_and_the_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nbt.models.resnet2d_attention(**kwargs)
