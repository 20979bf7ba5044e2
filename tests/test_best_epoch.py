"""The best epoch is the best model: a monitored metric that saturates (AUC 1.0 from epoch 1) is
tie-broken by the val loss, in best.pt, run.best_epoch, best_ema.pt and best_val.pt, through a resume
bit-identically, and from checkpoints written before ties were broken."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import nbtools as nbt
from nbtools.runs import load_checkpoint
from nbtools.runs.upgrade import upgrade_early_stopping as upgrade_state
from nbtools.train.early_stop import EarlyStopping
from tests.helpers import StopAfter, assert_same, small_cnn, without_times


def _track(early, epochs):
    """update() over (value, loss) pairs; the epochs that became the best, and where it stopped."""
    best, stopped = [], None
    for epoch, (value, loss) in enumerate(epochs, 1):
        if early.is_best(value, loss):
            best.append(epoch)
        if early.update(value, epoch, loss) and stopped is None:
            stopped = epoch
    return best, stopped


def test_a_tie_goes_to_the_lower_val_loss_and_resets_patience():
    early = EarlyStopping("max", patience=2)
    saturated = [(0.9, 0.6), (1.0, 0.5), (1.0, 0.3), (1.0, 0.2), (1.0, 0.1), (1.0, 0.15), (1.0, 0.12)]
    assert _track(early, saturated) == ([1, 2, 3, 4, 5], 7)
    assert (early.best, early.best_epoch, early.best_loss) == (1.0, 5, 0.1)


def test_without_the_tie_break_the_first_saturated_epoch_stays_and_patience_runs_out():
    """What the tie break changes: the same epochs with tie_break=False keep epoch 2 and stop at 4."""
    early = EarlyStopping("max", patience=2, tie_break=False)
    saturated = [(0.9, 0.6), (1.0, 0.5), (1.0, 0.3), (1.0, 0.2), (1.0, 0.1)]
    assert _track(early, saturated) == ([1, 2], 4)


def test_a_tie_never_lets_the_monitored_value_drift_worse():
    """Within min_delta but below the best is not a tie, however low its loss: the best value only rises."""
    early = EarlyStopping("max", patience=None, min_delta=0.01)
    drifting = [(0.95, 0.5), (0.945, 0.4), (0.94, 0.3), (0.935, 0.2)]
    assert _track(early, drifting) == ([1], None)
    assert early.best == 0.95
    early = EarlyStopping("max", patience=None, min_delta=0.01)
    creeping = [(0.95, 0.5), (0.955, 0.4), (0.958, 0.45), (0.96, 0.3)]  # better by <= min_delta: a tie
    assert _track(early, creeping) == ([1, 2, 4], None)
    assert (early.best, early.best_epoch) == (0.96, 4)


def test_a_min_mode_metric_ties_the_same_way():
    early = EarlyStopping("min", patience=None, min_delta=0.01)
    assert _track(early, [(0.2, 0.5), (0.2, 0.4), (0.205, 0.1), (0.195, 0.3), (0.18, 0.9)]) == (
        [1, 2, 4, 5],
        None,
    )


def test_val_loss_as_the_monitor_keeps_min_delta():
    """Monitoring val_loss leaves nothing to break a tie with: a drop within min_delta is no new best."""
    early = EarlyStopping("min", patience=2, min_delta=0.05, tie_break=False)
    assert _track(early, [(0.5, 0.5), (0.48, 0.48), (0.47, 0.47), (0.4, 0.4)]) == ([1, 4], 3)


def test_non_finite_values_and_losses_never_win():
    early = EarlyStopping("max", patience=None)
    assert _track(
        early, [(float("nan"), 0.1), (0.8, float("nan")), (0.8, 0.5), (0.8, None), (None, 0.01)]
    ) == (
        [2, 3],
        None,
    )
    assert early.best_loss == 0.5


def test_an_old_state_takes_the_best_epochs_loss_from_the_history():
    history = [{"epoch": 1, "val_loss": 0.7}, {"epoch": 2, "val_loss": 0.4, "ema_val_loss": float("nan")}]
    old = {"best": 1.0, "best_epoch": 2, "bad_epochs": 0}
    assert upgrade_state(old, history, "val_loss") == {**old, "best_loss": 0.4}
    assert upgrade_state(old, history, "ema_val_loss")["best_loss"] == math.inf
    assert upgrade_state(old, history[:1], "val_loss")["best_loss"] is None
    new = {**old, "best_loss": 0.3}
    assert upgrade_state(new, history, "val_loss") is new
    early = EarlyStopping("max", patience=None)
    early.load_state_dict(upgrade_state(old, history[:1], "val_loss"))
    assert not early.is_best(1.0, 0.01), "an unknown best loss is only beaten by an improvement"
    assert early.is_best(1.0 + 1e-9, 0.9)


# --- through fit -------------------------------------------------------------------------------------


class Separable(Dataset):
    """Two classes far apart: val AUC is 1.0 from the first epoch while the val loss keeps falling."""

    def __init__(self, n: int = 48, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.y = (torch.arange(n) % 3 == 0).long()
        self.x = 0.5 * torch.randn(n, 1, 8, 8, generator=g) + 3.0 * self.y.view(-1, 1, 1, 1).float()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + 0.05 * torch.randn_like(self.x[i]), self.y[i]  # draws from the global RNG


CFG = nbt.TrainConfig(
    epochs=4,
    batch_size=8,
    lr=3e-3,
    monitor="val_auc",
    patience=2,
    ema_decay=0.5,
    checkpoint_every_minutes=None,
    keep_last=10,
    seed=0,
)


def _fit(run_dir, cfg=CFG, **kw):
    return nbt.fit(
        small_cnn(), Separable(), Separable(seed=1), nn.CrossEntropyLoss(), cfg, run_dir, verbose=False, **kw
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    d = tmp_path_factory.mktemp("saturated")
    return d, _fit(d)


def test_auc_saturated_at_epoch_1_picks_the_later_epoch_of_lower_loss(straight):
    run_dir, run = straight
    aucs, losses = [h["val_auc"] for h in run.history], [h["val_loss"] for h in run.history]
    assert aucs == [1.0] * 4, f"the premise: AUC saturated from epoch 1 ({aucs})"
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] / 2, losses
    assert run.best_epoch == 4 and run.stop is None, "patience 2 would have stopped at epoch 3 without ties"
    last = load_checkpoint(run_dir / "epoch_004.pt")
    assert_same(torch.load(run_dir / "best.pt", weights_only=True), last["model"], "best.pt")
    assert torch.load(run_dir / "best_val.pt", weights_only=True)["epoch"] == 4
    ema_aucs = [h["ema_val_auc"] for h in run.history]
    assert ema_aucs[1:] == [1.0] * 3 and run.best_ema_epoch == 4, ema_aucs  # the EMA saturates at epoch 2
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert_same(torch.load(run_dir / "best_ema.pt", weights_only=True), ema, "best_ema.pt")
    assert last["early_stopping"] == {"best": 1.0, "best_epoch": 4, "bad_epochs": 0, "best_loss": losses[-1]}
    assert f"best epoch 4 (val_auc 1.0, val_loss {losses[-1]:.4g})" in str(run)


def test_the_tie_break_state_survives_a_resume_bit_identically(straight, tmp_path):
    with pytest.raises(StopAfter.Disconnect):  # 6 batches an epoch: killed in epoch 3
        _fit(tmp_path, batch_transform=StopAfter(14))
    assert load_checkpoint(tmp_path / "epoch_002.pt")["early_stopping"]["best_epoch"] == 2
    run = _fit(tmp_path, resume="latest")
    a, b = load_checkpoint(straight[0] / "epoch_004.pt"), load_checkpoint(tmp_path / "epoch_004.pt")
    for key in ("model", "ema", "early_stopping", "ema_best", "rng"):
        assert_same(a[key], b[key], key)
    for name in ("best.pt", "best_ema.pt", "best_val.pt"):
        assert_same(torch.load(straight[0] / name), torch.load(tmp_path / name), name)
    assert (run.best_epoch, run.best_ema_epoch) == (straight[1].best_epoch, straight[1].best_ema_epoch)
    assert without_times(run.history) == without_times(straight[1].history)


def test_a_checkpoint_from_before_ties_were_broken_resumes_the_same(straight, tmp_path):
    """A checkpoint without best_loss (as nbtools wrote them before) resumes to the straight run: the
    loss of its best epoch comes from its own history."""
    with pytest.raises(StopAfter.Disconnect):
        _fit(tmp_path, batch_transform=StopAfter(14))
    path = tmp_path / "epoch_002.pt"
    state = load_checkpoint(path)
    state["version"] = 1  # the version of the checkpoints nbtools wrote then
    for key in ("early_stopping", "ema_best"):
        del state[key]["best_loss"]
    torch.save(state, path)
    run = _fit(tmp_path, resume=2)
    a, b = load_checkpoint(straight[0] / "epoch_004.pt"), load_checkpoint(tmp_path / "epoch_004.pt")
    for key in ("model", "early_stopping", "ema_best"):
        assert_same(a[key], b[key], key)
    assert run.best_epoch == 4
