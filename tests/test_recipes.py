"""Recipes record how they were built, so a run folder can rebuild its job for a resume."""

import pytest
import torch

import nbtools as nbt
from nbtools import recipes
from tests.helpers import StopAfter, assert_same, without_times


def _tiny_job(**kw):
    return recipes.make_job("resnet3d", smoke=True, n_train=8, n_val=4, epochs=1, batch_size=4, **kw)


def test_make_job_records_the_recipe_and_its_arguments():
    job = _tiny_job(lr=1e-3)
    assert job.meta == {
        "recipe": "resnet3d",
        "args": {"smoke": True, "n_train": 8, "n_val": 4, "epochs": 1, "batch_size": 4, "lr": 1e-3},
    }
    assert job.config.lr == 1e-3 and job.batch_transform is not None


def test_an_unknown_recipe_is_named():
    with pytest.raises(ValueError, match=r"'nope'.*resnet3d"):
        recipes.make_job("nope")


def test_load_job_rebuilds_the_run_with_new_config_values(tmp_path):
    job = _tiny_job(checkpoint_every_minutes=None)
    job.fit(tmp_path, verbose=False)
    again = recipes.load_job(tmp_path, epochs=2, lr=5e-4)
    assert again.meta["recipe"] == "resnet3d"
    assert (again.config.epochs, again.config.lr, again.config.batch_size) == (2, 5e-4, 4)
    assert len(again.train_data) == 8
    run = again.fit(tmp_path, resume="latest", verbose=False)
    assert [h["epoch"] for h in run.history] == [1, 2]
    assert run.meta == again.meta
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_load_job_refuses_overrides_that_would_change_the_data(tmp_path):
    _tiny_job(checkpoint_every_minutes=None).fit(tmp_path, verbose=False)
    with pytest.raises(ValueError, match="n_train"):
        recipes.load_job(tmp_path, n_train=64)


def test_load_job_on_a_run_without_a_recipe_says_what_to_do(tmp_path):
    job = _tiny_job(checkpoint_every_minutes=None)
    job.meta = {}
    job.fit(tmp_path, verbose=False)
    with pytest.raises(ValueError, match="resume='latest'"):
        recipes.load_job(tmp_path)


def test_seed_004_unfreeze_epochs_scale_with_the_run():
    assert recipes.scaled_unfreeze(40) == {8: "layer2", 15: "layer1"}
    assert recipes.scaled_unfreeze(10) == {2: "layer2", 4: "layer1"}
    assert recipes.scaled_unfreeze(2) == {2: "layer2", 3: "layer1"}  # layer1 frozen all run


def test_focal2d_uses_seed_004_rates_for_pretrained_weights_and_larger_ones_from_scratch(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    pretrained = recipes.make_job("focal2d", smoke=True, weights=str(path))
    scratch = recipes.make_job("focal2d", smoke=True)
    seed_004 = {"backbone": 5e-5, "attention": 2e-4, "classifier": 5e-4}
    assert pretrained.config.group_lrs == pytest.approx(seed_004)
    assert scratch.config.group_lrs == pytest.approx(
        {"backbone": 1e-3, "attention": 2e-3, "classifier": 5e-3}
    )
    assert pretrained.model.load_report.loaded == len(pretrained.model.backbone.state_dict())
    assert pretrained.config.clip_norm == 0.5 and pretrained.config.unfreeze == {2: "layer2", 3: "layer1"}
    x, y = pretrained.train_data[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y in (0, 1)


def test_load_job_keeps_the_config_the_run_trained_with(tmp_path):
    # focal2d derives its unfreeze epochs from `epochs`; a resume with more epochs must not move them
    job = recipes.make_job("focal2d", smoke=True, epochs=1, checkpoint_every_minutes=None)
    job.fit(tmp_path, verbose=False)
    again = recipes.load_job(tmp_path, epochs=10, lr=1e-4)
    assert again.config.unfreeze == job.config.unfreeze == {2: "layer2", 3: "layer1"}
    assert recipes.scaled_unfreeze(10) != job.config.unfreeze  # what a fresh recipe would have said
    assert (again.config.epochs, again.config.lr) == (10, 1e-4)
    assert again.config.group_lrs == job.config.group_lrs


def test_load_job_resumes_without_the_pretrained_file(tmp_path):
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    job = recipes.make_job(
        "focal2d", smoke=True, epochs=1, weights=str(weights), checkpoint_every_minutes=None
    )
    job.fit(tmp_path / "run", verbose=False)
    weights.unlink()  # gone with the Colab runtime
    again = recipes.load_job(tmp_path / "run", epochs=2)
    assert again.meta == job.meta and again.meta["args"]["weights"] == str(weights)
    assert again.config.group_lrs == job.config.group_lrs  # the pretrained rates, from the run's config
    run = again.fit(tmp_path / "run", resume="latest", verbose=False)
    assert run.epoch == 2


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["resnet3d", "focal2d"])
def test_a_recipe_run_resumed_through_load_job_is_bit_identical(recipe, tmp_path):
    """The whole pipeline as 02/03 then 04 run it: augmentation (Augment3D on the device, albumentations
    per item), unfreeze, EMA, Focal Loss. 3 epochs straight vs a disconnect at the first batch of epoch 2,
    then load_job and resume="latest"."""
    args = dict(smoke=True, epochs=3, checkpoint_every_minutes=None)
    straight = recipes.make_job(recipe, **args).fit(tmp_path / "straight", verbose=False)
    job = recipes.make_job(recipe, **args)
    augment, stop = job.batch_transform, StopAfter(-(-len(job.train_data) // job.config.batch_size))

    def disconnect_then_augment(x, y):
        x, y = stop(x, y)
        return augment(x, y) if augment else (x, y)

    job.batch_transform = disconnect_then_augment
    with pytest.raises(StopAfter.Disconnect):
        job.fit(tmp_path / "resumed", verbose=False)
    assert [c.epoch for c in nbt.list_checkpoints(tmp_path / "resumed")] == [1]
    resumed = recipes.load_job(tmp_path / "resumed").fit(tmp_path / "resumed", resume="latest", verbose=False)
    assert_same(straight.model.state_dict(), resumed.model.state_dict())
    assert without_times(straight.history) == without_times(resumed.history)


def test_the_same_arguments_give_the_same_initial_model_whatever_the_global_rng():
    a = recipes.make_job("resnet3d", smoke=True)
    torch.rand(100)
    b = recipes.make_job("resnet3d", smoke=True)
    c = recipes.make_job("resnet3d", smoke=True, seed=1)
    assert_same(a.model.state_dict(), b.model.state_dict())
    assert not torch.equal(a.model.conv1.weight, c.model.conv1.weight)


def test_a_volume_shape_is_d_h_w_or_one_int_for_a_cube():
    """02's VOLUME_SHAPE = 64 (papermill -p VOLUME_SHAPE 48 passes an int; a list comes from YAML)."""
    from nbtools.recipes.sizes import volume_shape

    assert volume_shape(48, 32) == (48, 48, 48) and volume_shape([48, 64, 64], 32) == (48, 64, 64)
    assert volume_shape(None, 32) == (32, 32, 32)
    with pytest.raises(
        ValueError, match=r"shape must be \(D, H, W\) or one int for a cube, each >= 1, got \(48, 64\)"
    ):
        volume_shape((48, 64), 32)
