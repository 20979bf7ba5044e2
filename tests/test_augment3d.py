"""Augment3D: shape, dtype and labels kept, seeded, identity when off, the same affine as scipy, a
gamma that keeps z-scored statistics, and bit-identical resume inside nbt.fit."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

import nbtools as nbt
from nbtools.data.augment3d import _COLUMNS, Augment3D, _affine_grid
from nbtools.runs import load_checkpoint
from tests.helpers import StopAfter, assert_same, without_times

OFF = dict(p_flip=0, p_rotate=0, p_zoom=0, p_translate=0, p_gamma=0, p_scale=0, p_shift=0)


def _smooth(b=2, c=1, d=12, h=16, w=20, seed=0):
    """Smooth random volumes, so trilinear interpolation error is small against the signal."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, d + 4, h + 4, w + 4, generator=g)
    return F.avg_pool3d(x, 5, 1)


def test_keeps_shape_dtype_and_labels_and_changes_the_volumes():
    x, y = _smooth(4, 2), torch.tensor([0, 1, 1, 0])
    out, y_out = Augment3D(1, 1, 1, 1, 1, 1, 1)(x, y)
    assert out.shape == x.shape and out.dtype == x.dtype and y_out is y
    assert not torch.equal(out, x)
    assert torch.isfinite(out).all()


def test_reproducible_under_torch_manual_seed():
    aug, x = Augment3D(), _smooth(6)
    torch.manual_seed(5)
    a = aug(x)[0]
    torch.manual_seed(5)
    b = aug(x)[0]
    torch.manual_seed(6)
    c = aug(x)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_identity_setting_returns_the_input_and_draws_nothing():
    x, y = _smooth(), torch.tensor([1, 0])
    state = torch.get_rng_state()
    out, y_out = Augment3D(**OFF)(x, y)
    assert out is x and y_out is y
    assert torch.equal(torch.get_rng_state(), state)


def test_samples_no_op_picked_are_bit_identical():
    x = _smooth(3)
    u = torch.rand(3, _COLUMNS, dtype=torch.float64)
    u[0, :9] = 0.99  # sample 0: nothing fires; samples 1 and 2 get everything
    u[1:, :9] = 0.0
    out = Augment3D(0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5)._apply(x, u)
    assert torch.equal(out[0], x[0])
    assert not torch.equal(out[1], x[1]) and not torch.equal(out[2], x[2])


def _scipy_reference(vol: np.ndarray, u: torch.Tensor, aug: Augment3D) -> np.ndarray:
    """The warp Augment3D should do, written independently as a voxel-space affine for scipy."""
    d, h, w = vol.shape
    signs = np.where(u[0:3].numpy() < aug.probs["p_flip"], -1.0, 1.0)[::-1]  # (D, H, W) -> (x, y, z)
    a = (2 * u[9:12].numpy() - 1) * math.radians(aug.max_degrees)
    (cx, cy, cz), (sx, sy, sz) = np.cos(a), np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m_xyz = np.diag(signs) @ rz @ ry @ rx / (1 + (2 * float(u[12]) - 1) * aug.max_zoom)
    t_xyz = np.array([w, h, d]) * (2 * u[13:16].numpy() - 1) * aug.max_translate
    rev = np.eye(3)[::-1]
    m = rev @ m_xyz @ rev
    centre = (np.array([d, h, w]) - 1) / 2
    return ndimage.affine_transform(vol, m, offset=centre - m @ centre + rev @ t_xyz, order=1, mode="nearest")


def test_warp_matches_scipy_affine_transform_on_a_non_cubic_volume():
    x = _smooth(1, 1, 12, 16, 20).double()
    aug = Augment3D(0.5, 1, 1, 1, 0, 0, 0)
    for seed in range(3):
        u = torch.rand(_COLUMNS, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        out = aug._apply(x, u[None])[0, 0].numpy()
        ref = _scipy_reference(x[0, 0].numpy(), u, aug)
        inner = (slice(3, -3),) * 3  # the edges differ only in how padding rounds
        assert np.abs(out - ref)[inner].max() < 1e-6, seed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(12, 16, 20), (5, 9, 3), (1, 6, 7)])
def test_hand_built_grid_equals_affine_grid(size, dtype):
    g = torch.Generator().manual_seed(sum(size))
    theta = torch.randn(4, 3, 4, generator=g, dtype=dtype)
    ours = _affine_grid(theta, size)
    ref = F.affine_grid(theta, [4, 1, *size], align_corners=False)
    assert ours.shape == ref.shape and ours.dtype == dtype
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_a_flip_alone_is_exact_and_a_mixed_batch_warps_each_sample_as_alone():
    x = _smooth(3)
    u = torch.rand(3, _COLUMNS, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u[:, :9] = 0.99
    u[0, [0, 1]] = 0.0  # sample 0: flip D and H (not symmetric in D <-> W), nothing else
    u[2, [2, 3]] = 0.0  # sample 2: flip W and rotate; sample 1: nothing
    aug = Augment3D(0.5, 0.5, 0.5, 0.5, 0, 0, 0)
    out = aug._apply(x, u)
    assert torch.equal(out[0], x[0].flip([1, 2]))
    assert torch.equal(out[1], x[1])
    alone = aug._apply(x[2:], u[2:])[0]  # every sample resampled: the path the scipy test checks
    assert (alone - x[2].flip(3)).abs().max() > 1e-2
    torch.testing.assert_close(out[2], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "op, off",
    [
        ("p_rotate", dict(max_degrees=0)),
        ("p_zoom", dict(max_zoom=0)),
        ("p_translate", dict(max_translate=0)),
        ("p_scale", dict(max_scale=0)),
        ("p_shift", dict(max_shift=0)),
        ("p_gamma", dict(gamma_range=(1.0, 1.0))),
        ("p_flip", dict(flip_axes=())),
    ],
)
def test_every_magnitude_takes_effect(op, off):
    x = _smooth(2)
    torch.manual_seed(0)
    moved = Augment3D(**{**OFF, op: 1.0})(x)[0]
    torch.manual_seed(0)
    still = Augment3D(**{**OFF, op: 1.0}, **off)(x)[0]
    assert (moved - x).abs().max() > 1e-2
    assert (still - x).abs().max() < 1e-5


def test_padding_mode_takes_effect():
    x = _smooth(1) + 5.0  # far from 0, so zero padding shows
    kw = {**OFF, "p_translate": 1.0, "max_translate": 0.3}
    torch.manual_seed(1)
    zeros = Augment3D(**kw, padding_mode="zeros")(x)[0]
    torch.manual_seed(1)
    border = Augment3D(**kw, padding_mode="border")(x)[0]
    assert zeros.min() == 0.0 and border.min() > 3.0


def test_gamma_keeps_each_volume_mean_std_and_order():
    ds = nbt.data.SyntheticVolumes(n=4, shape=(16, 16, 16), seed=2)
    x = torch.stack([ds[i][0] for i in range(4)])  # z-scored: half the voxels are negative
    out = Augment3D(**{**OFF, "p_gamma": 1.0}, gamma_range=(0.7, 0.7))(x)[0]
    assert torch.isfinite(out).all() and (out - x).abs().max() > 0.1
    v, o = x.flatten(1).double(), out.flatten(1).double()
    assert torch.allclose(o.mean(1), v.mean(1), atol=1e-5)
    assert torch.allclose(o.std(1), v.std(1), rtol=1e-4)
    # a monotone contrast curve: in the order of the input, the output never goes down (but for rounding)
    assert (o.gather(1, v.argsort(1)).diff(dim=1) > -1e-5).all()


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="p_rotate must be a probability"):
        Augment3D(p_rotate=1.5)
    with pytest.raises(ValueError, match="padding_mode"):
        Augment3D(padding_mode="wrap")
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\), got shape \(1, 8, 8, 8\)"):
        Augment3D()(torch.zeros(1, 8, 8, 8))


def _tiny3d():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv3d(1, 2, 3),
        nn.BatchNorm3d(2),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(2, 2),
    )


CFG = nbt.TrainConfig(
    epochs=2, batch_size=4, lr=1e-2, log_every=2, checkpoint_every_minutes=None, keep_last=10, seed=4
)
TRAIN = nbt.data.SyntheticVolumes(n=16, shape=(16, 16, 16), seed=0)
VAL = nbt.data.SyntheticVolumes(n=8, shape=(16, 16, 16), seed=1)


def _fit(run_dir, transform, cfg=CFG, **kw):
    return nbt.fit(
        _tiny3d(),
        TRAIN,
        VAL,
        nn.CrossEntropyLoss(),
        cfg,
        run_dir,
        batch_transform=transform,
        verbose=False,
        **kw,
    )


@pytest.mark.slow
def test_fit_with_augment3d_resumes_bit_identically(tmp_path):
    aug = Augment3D()
    straight = _fit(tmp_path / "straight", aug)
    # 4 batches per epoch; a checkpoint every 2 steps; the "disconnect" comes on the 8th batch
    stop = StopAfter(7)
    cfg = CFG.replace(checkpoint_every_steps=2)

    def dies(x, y):
        return aug(*stop(x, y))

    with pytest.raises(StopAfter.Disconnect):
        _fit(tmp_path / "resumed", dies, cfg)
    latest = nbt.list_checkpoints(tmp_path / "resumed")[-1]
    assert latest.mid_epoch and latest.epoch == 1 and latest.batch == 2, latest
    resumed = _fit(tmp_path / "resumed", aug, cfg, resume="latest")
    a = load_checkpoint(tmp_path / "straight" / "epoch_002.pt")
    b = load_checkpoint(tmp_path / "resumed" / "epoch_002.pt")
    for key in ("model", "optimizer", "rng"):
        assert_same(a[key], b[key], key)
    assert without_times(straight.history) == without_times(resumed.history)
    # the augmentation really ran: without it training ends elsewhere
    plain = _fit(tmp_path / "plain", None)
    assert not torch.equal(plain.model[0].weight, straight.model[0].weight)
