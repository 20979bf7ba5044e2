"""load_pretrained on MedicalNet-style checkpoints the tests build and save themselves (no downloads)."""

import pytest
import torch
from torch import nn

import nbtools as nbt

SEG_HEAD = {  # MedicalNet's conv_seg head keys (ConvTranspose3d, BN, Conv3d), absent from our classifier
    "conv_seg.0.weight": (512, 32, 2, 2, 2),
    "conv_seg.0.bias": (32,),
    "conv_seg.1.weight": (32,),
}
MISMATCHED = "layer4.0.conv2.weight"


@pytest.fixture(scope="module")
def medicalnet_file(tmp_path_factory):
    """A resnet-10 (width 1, shortcut B) saved the way MedicalNet does: {"state_dict": {"module.<key>": ...}},
    with its segmentation head instead of fc and one tensor of the wrong shape."""
    torch.manual_seed(1)
    src = nbt.models.resnet3d(depth=10)
    sd = {}
    for key, value in src.state_dict().items():
        if key.startswith("fc."):
            continue
        if "running" in key:  # non-default BN statistics, so loading them is visible
            value = value + torch.rand_like(value)
        sd[f"module.{key}"] = value.clone()
    for key, shape in SEG_HEAD.items():
        sd[f"module.{key}"] = torch.randn(shape)
    sd[f"module.{MISMATCHED}"] = torch.randn(512, 512, 1, 1, 1)
    path = tmp_path_factory.mktemp("pretrain") / "resnet_10.pth"
    torch.save({"state_dict": sd}, path)
    return path, {k.removeprefix("module."): v for k, v in sd.items()}


def test_medicalnet_checkpoint_loads_and_reports(medicalnet_file, capsys):
    path, ckpt = medicalnet_file
    torch.manual_seed(2)
    model = nbt.models.resnet3d(depth=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    rep = nbt.models.load_pretrained(model, path)

    assert isinstance(rep, nbt.models.LoadReport)
    assert rep.total == len(before) == 74
    assert rep.loaded == 74 - 2 - 1  # minus fc.weight, fc.bias and the mismatched tensor
    assert rep.missing == [MISMATCHED, "fc.weight", "fc.bias"]
    assert sorted(rep.unexpected) == sorted(SEG_HEAD)
    assert rep.mismatched == [(MISMATCHED, (512, 512, 1, 1, 1), (512, 512, 3, 3, 3))]
    assert rep.source == str(path)
    after = model.state_dict()
    for key in after:
        if key in rep.missing:
            assert torch.equal(after[key], before[key]), f"{key} should keep its own init"
        else:
            assert torch.equal(after[key], ckpt[key]), f"{key} was not loaded"
    text = str(rep)
    assert text.startswith(f"loaded 71/74 tensors from {path}; missing: {MISMATCHED}, fc.weight, fc.bias; ")
    assert "skipped 1 mismatched (layer4.0.conv2.weight: checkpoint (512, 512, 1, 1, 1)" in text
    assert "ignored 3 unexpected (conv_seg.*)" in text
    assert text in capsys.readouterr().out  # verbose=True prints it


def test_strict_raises_and_leaves_the_model_unchanged(medicalnet_file, capsys):
    path, _ = medicalnet_file
    model = nbt.models.resnet3d(depth=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"strict.*loaded 71/74.*missing: layer4\.0\.conv2\.weight"):
        nbt.models.load_pretrained(model, path, strict=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert capsys.readouterr().out == ""


def _small(depth=10, shortcut="B", width=0.125):
    return nbt.models.resnet3d(depth=depth, shortcut=shortcut, width=width)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model_state_dict": sd, "epoch": 3},
        lambda sd: {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}},
        lambda sd: {"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
    ],
    ids=["plain", "model_state_dict", "compiled", "dataparallel+compiled"],
)
def test_state_dict_layouts_all_load_fully(wrap):
    src = _small()
    model = _small()
    nn.init.zeros_(model.conv1.weight)
    rep = nbt.models.load_pretrained(model, wrap(src.state_dict()), strict=True, verbose=False)
    assert (rep.loaded, rep.missing, rep.unexpected, rep.mismatched) == (rep.total, [], [], [])
    assert torch.equal(model.conv1.weight, src.conv1.weight)


def test_legacy_pre_1_6_format_loads(tmp_path):
    # MedicalNet's files were written by torch 0.4, before the zip format.
    src = _small()
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": src.state_dict()}, path, _use_new_zipfile_serialization=False)
    rep = nbt.models.load_pretrained(_small(), path, verbose=False)
    assert rep.loaded == rep.total


def test_wrapped_model_is_unwrapped():
    src = _small()
    rep = nbt.models.load_pretrained(nn.DataParallel(_small()), src.state_dict(), verbose=False)
    assert rep.loaded == rep.total


def test_missing_num_batches_tracked_is_harmless_even_when_strict():
    sd = {k: v for k, v in _small().state_dict().items() if not k.endswith("num_batches_tracked")}
    rep = nbt.models.load_pretrained(_small(), sd, strict=True, verbose=False)
    assert rep.missing and all(k.endswith("num_batches_tracked") for k in rep.missing)
    assert "missing: none (+" in str(rep) and "harmless" in str(rep)


def test_missing_file_names_the_path_and_where_to_get_weights(tmp_path):
    path = tmp_path / "medicalnet_resnet50.pth"
    with pytest.raises(FileNotFoundError, match=r"medicalnet_resnet50\.pth.*Tencent/MedicalNet"):
        nbt.models.load_pretrained(_small(), path)


def test_file_that_is_not_a_checkpoint_is_named(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("<html>Google Drive: virus scan warning</html>")
    with pytest.raises(ValueError, match=r"weights\.pth is not a torch checkpoint.*HTML page"):
        nbt.models.load_pretrained(_small(), path)
    path.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ValueError, match=r"weights\.pth .*not a readable torch checkpoint"):
        nbt.models.load_pretrained(_small(), path)


def test_zero_match_raises_with_keys_side_by_side():
    foreign = {"encoder.stem.weight": torch.zeros(8, 1, 3, 3, 3), "encoder.stem.bias": torch.zeros(8)}
    with pytest.raises(
        ValueError, match=r"(?s)no tensor.*model keys\s+checkpoint keys.*conv1\.weight.*encoder\.stem"
    ):
        nbt.models.load_pretrained(_small(), foreign)


def test_only_bn_counters_matching_counts_as_zero_match():
    # A width-0.25 backbone into a width-0.125 model: only the shape-() num_batches_tracked counters fit.
    backbone = {k: v for k, v in _small(width=0.25).state_dict().items() if not k.startswith("fc.")}
    with pytest.raises(ValueError, match=r"no tensor"):
        nbt.models.load_pretrained(_small(width=0.125), backbone, verbose=False)


def test_shortcut_mismatch_gets_a_hint():
    rep = nbt.models.load_pretrained(
        _small(depth=18, shortcut="B"), _small(depth=18, shortcut="A").state_dict(), verbose=False
    )
    assert rep.missing and all(".downsample." in k for k in rep.missing)
    assert "shortcut='A'" in str(rep)
