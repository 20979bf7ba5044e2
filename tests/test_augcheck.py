"""check_augmentation flags seed 001's pipeline (gamma on z-scored data, clip to >= 0) and passes the
same ops used correctly and our z-score-safe gamma."""

import warnings

import albumentations as A
import numpy as np
import pytest
import torch
from scipy import ndimage

import nbtools as nbt

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # albumentations warns that a lambda does not pickle
    CLIP = A.Lambda(image=lambda x, **kw: np.clip(x, 0, None), p=1.0)


def _images(n=8, size=48, seed=0):
    """Smooth random images in [0, 1] (H, W, 1), like real images rather than white noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        im = ndimage.gaussian_filter(rng.standard_normal((size, size)), 3)
        out.append(((im - im.min()) / (im.max() - im.min())).astype(np.float32)[..., None])
    return out


def _zscored(images):
    return [(im - im.mean()) / im.std() for im in images]


def _kinds(rep):
    return {(i.op, i.kind) for i in rep.issues}


def test_random_gamma_on_zscored_data_is_flagged_with_op_sample_and_numbers():
    rep = nbt.check_augmentation(A.Compose([A.HorizontalFlip(), A.RandomGamma(p=0.25)]), _zscored(_images()))
    assert not rep.ok
    assert {"nonfinite", "domain"} <= {k for op, k in _kinds(rep) if op == "op 1 RandomGamma"}
    domain = next(i for i in rep.issues if i.kind == "domain")
    assert isinstance(domain.sample, int) and "x**gamma" in domain.detail and "reaches -" in domain.detail
    assert not any(op.startswith("op 0") for op, _ in _kinds(rep))  # the flip is fine


def test_random_gamma_on_unit_range_images_passes():
    rep = nbt.check_augmentation(A.Compose([A.RandomGamma(p=1.0), A.HorizontalFlip()]), _images())
    assert rep.ok, str(rep)
    assert abs(rep.ops[0]["mean_shift"]) < 0.1 and abs(rep.ops[0]["std_ratio"] - 1) < 0.05


def test_seed_001_clip_is_flagged_for_its_mean_shift():
    rep = nbt.check_augmentation(A.Compose([CLIP, A.RandomGamma(p=0.25)]), _zscored(_images()))
    assert ("op 0 Lambda", "mean_shift") in _kinds(rep) and ("op 0 Lambda", "std_shift") in _kinds(rep)
    assert rep.ops[0]["mean_shift"] == pytest.approx(0.40, abs=0.05)
    assert rep.before["mean"] == pytest.approx(0.0, abs=1e-6) and rep.after["mean"] > 0.3
    # after the clip gamma gets non-negative input: no domain issue, no NaN
    assert not {k for op, k in _kinds(rep) if op == "op 1 RandomGamma"}
    # tolerance takes effect: a looser one accepts the clip
    assert nbt.check_augmentation(CLIP, _zscored(_images()), tolerance=0.5).ok


def test_augment3d_gamma_is_zscore_safe():
    ds = nbt.data.SyntheticVolumes(n=8, shape=(16, 16, 16), seed=3)
    gamma_only = nbt.data.Augment3D(
        p_flip=0, p_rotate=0, p_zoom=0, p_translate=0, p_gamma=1.0, p_scale=0, p_shift=0
    )
    rep = nbt.check_augmentation(gamma_only, ds)
    assert rep.ok, str(rep)
    assert abs(rep.ops[0]["mean_shift"]) < 1e-3 and abs(rep.ops[0]["std_ratio"] - 1) < 1e-3
    # the same volumes through a plain x**gamma: NaN for the negative half
    rep = nbt.check_augmentation(lambda t: t**0.8, ds)
    assert ("<lambda>", "nonfinite") in _kinds(rep)


def test_plain_callables_and_dataset_sample_names():
    ds = nbt.data.SyntheticVolumes(n=40, shape=(16, 16, 16), seed=0)
    rep = nbt.check_augmentation(lambda t: t.flip(-1), ds, max_samples=4)
    assert rep.ok and rep.n_samples == 4
    rep = nbt.check_augmentation(torch.log, ds, max_samples=4)
    issue = next(i for i in rep.issues if i.kind == "nonfinite")
    assert issue.op == "log" and issue.sample in (0, 13, 26, 39)  # dataset indices, evenly spaced


def test_trials_and_seed_take_effect():
    images = _images(3)
    op = A.Compose([A.RandomBrightnessContrast(p=1.0)])
    a = nbt.check_augmentation(op, images, trials=2, seed=1)
    b = nbt.check_augmentation(op, images, trials=2, seed=1)
    c = nbt.check_augmentation(op, images, trials=2, seed=2)
    assert a.ops[0]["calls"] == 6 and nbt.check_augmentation(op, images, trials=5).ops[0]["calls"] == 15
    assert a.after == b.after and a.after != c.after


def test_range_rule_and_report_rendering():
    rep = nbt.check_augmentation(lambda t: t * 3.0, [torch.randn(1, 8, 8, 8) for _ in range(4)])
    assert {"range", "std_shift"} <= {i.kind for i in rep.issues}
    text = str(rep)
    assert "NOT OK" in text and "before" in text and "after" in text
    assert "<table>" in rep._repr_html_()


def test_callers_rng_and_transform_state_are_untouched():
    vol, images = torch.randn(1, 8, 8, 8), _images(2)
    torch.manual_seed(123)
    np.random.seed(123)
    t_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    compose = A.Compose([A.RandomGamma(p=0.5)], seed=7)
    before = compose.random_generator.bit_generator.state
    nbt.check_augmentation(compose, images, trials=2)
    nbt.check_augmentation(nbt.data.Augment3D(), [vol], trials=2)
    assert torch.equal(torch.get_rng_state(), t_state) and (np.random.get_state()[1] == np_state).all()
    assert compose.random_generator.bit_generator.state == before


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="trials must be"):
        nbt.check_augmentation(CLIP, _images(1), trials=0)
    with pytest.raises(ValueError, match="at least one sample"):
        nbt.check_augmentation(CLIP, [])
    with pytest.raises(ValueError, match=r"Augment3D is checked on samples \(C, D, H, W\)"):
        nbt.check_augmentation(nbt.data.Augment3D(), [torch.zeros(8, 8)])
