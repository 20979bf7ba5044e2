"""Issue 17 through `fit`: a resume with more epochs, a new LR or a restart bends the LR curve without
a jump, says so, records it in run.config_changes, and the LR panels mark the resume."""

import itertools

import pytest

import nbtools as nbt
from nbtools.runs import load_checkpoint
from nbtools.viz import panels
from nbtools.viz.curves import learning_figure
from nbtools.viz.dashboard import Dashboard
from tests.helpers import StopAfter, assert_same, tiny_fit

# 12 optimizer steps an epoch; warmup 1 epoch, cosine from 1e-2 to the floor 1e-4
CFG = nbt.TrainConfig(
    epochs=4,
    batch_size=4,
    lr=1e-2,
    warmup_epochs=1,
    log_every=1,
    checkpoint_every_minutes=None,
    keep_last=10,
    seed=3,
)
SPE = 12


def _train(run_dir, cfg, verbose=True, **kw):
    return tiny_fit(cfg, run_dir, dashboard="text", verbose=verbose, **kw)


def _lrs(run):
    """The LR of each optimizer step: a record's LR is the one the next step runs at."""
    return [r["lr"]["default"] for r in run.steps]


def _max_ratio(seq):
    return max(max(a / b, b / a) for a, b in itertools.pairwise(seq))


@pytest.fixture(scope="module")
def four_then_eight(tmp_path_factory):
    """The issue's measurement: 4 epochs (the LR ends at the floor), then resumed with epochs=8."""
    d = tmp_path_factory.mktemp("more")
    _train(d, CFG, verbose=False)
    return d, _train(d, CFG.replace(epochs=8), resume="latest", verbose=False)


def test_more_epochs_continue_from_the_floor_without_a_jump(four_then_eight):
    _, run = four_then_eight
    lrs = _lrs(run)
    assert lrs[4 * SPE - 1] == pytest.approx(1e-4)  # where the first session left it
    after = lrs[4 * SPE - 1 :]
    assert _max_ratio(after) <= 1 + 1e-9, f"the LR jumped {_max_ratio(after):.3g}x at the resume"
    assert run.history[-1]["lr"]["default"] == pytest.approx(1e-4)
    change = run.config_changes[0]
    assert change["step"] == 4 * SPE and change["lr_plan"][0] == (
        "LR stays at its floor, 1e-4, for 4 epochs: the run had already decayed to it"
    )
    assert "new LR (e.g. lr=5e-3" in change["lr_plan"][1] and 'schedule="restart"' in change["lr_plan"][1]
    (seg,) = change["lr_segments"]["default"]  # factors of the base LR 1e-2
    assert (seg["start"], seg["end"], seg["kind"]) == (48, 96, "cosine")
    assert (seg["from"], seg["to"]) == (pytest.approx(1e-2), pytest.approx(1e-2))


def test_a_new_lr_ramps_from_the_current_lr_then_decays_and_the_change_is_printed(tmp_path, capsys):
    # seed 004's remedy: back to an earlier epoch (here 2 of 4), with a lower LR
    _train(tmp_path, CFG, verbose=False)
    run = _train(tmp_path, CFG.replace(lr=1e-3), resume=2)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "config change: lr: 0.01 -> 0.001" in text
    at = 2 * SPE
    lrs = _lrs(run)
    now = lrs[at - 1]  # a third of the way down the first session's cosine
    assert now == pytest.approx(7.525e-3)
    assert (
        "LR ramps from 7.52e-3 to 1e-3 over 3 steps, then decays to 1e-5 over 21 steps (1.8 epochs)" in text
    )
    ramp = lrs[at - 1 : at + 3]
    assert ramp[-1] == pytest.approx(1e-3) and _max_ratio(ramp) <= 1 + (now - 1e-3) / (3 * 1e-3) + 1e-9
    assert all(b <= a for a, b in zip(lrs[at - 1 :], lrs[at:])), "no rise anywhere after the resume"
    assert run.history[-1]["lr"]["default"] == pytest.approx(1e-5)


def test_restart_is_a_warm_restart_to_the_configured_lr(tmp_path):
    _train(tmp_path, CFG, verbose=False)
    run = _train(tmp_path, CFG.replace(epochs=6, schedule="restart"), resume="latest", verbose=False)
    lrs = _lrs(run)
    assert run.config_changes[0]["lr_plan"][0].startswith(
        "LR restarts (schedule='restart'): ramps from 1e-4 to 1e-2 over 12 steps"
    )
    assert run.history[4]["lr"]["default"] == pytest.approx(1e-2)  # the peak, one warmup epoch later
    assert _max_ratio(lrs[4 * SPE - 1 : 5 * SPE]) <= 1 + 99 / 12 + 1e-9  # the ramp, nothing steeper
    assert run.history[-1]["lr"]["default"] == pytest.approx(1e-4)


def test_a_resumed_new_plan_resumes_bit_identically(tmp_path):
    """2 epochs, then a new LR and more epochs; that second session disconnected in its first epoch
    and resumed again ends exactly where the uninterrupted second session does."""
    new = CFG.replace(epochs=4, lr=1e-3)
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        _train(d, CFG.replace(epochs=2), verbose=False)
    run_a = _train(a, new, resume="latest", verbose=False)
    with pytest.raises(StopAfter.Disconnect):
        _train(b, new, resume="latest", verbose=False, batch_transform=StopAfter(SPE + 5))
    run_b = _train(b, new, resume="latest", verbose=False)
    for key in ("model", "optimizer", "scheduler", "rng", "step"):
        assert_same(load_checkpoint(a / "epoch_004.pt")[key], load_checkpoint(b / "epoch_004.pt")[key], key)
    assert [h["lr"] for h in run_a.history] == [h["lr"] for h in run_b.history]
    assert len(run_b.config_changes) == 1, "the unchanged second resume changes nothing"


def _vlines(ax):
    return [line.get_xdata()[0] for line in ax.lines if list(line.get_xdata()) == [line.get_xdata()[0]] * 2]


def test_the_lr_panels_mark_the_resume(four_then_eight):
    d, run = four_then_eight
    fig = learning_figure(nbt.runs.Run.load(d))
    assert _vlines(fig.axes[1]) == [4.0]  # the LR axis, in epochs
    dash = Dashboard(8, display=False)
    dash.resumed(run)
    assert _vlines(dash.fig.axes[2]) == [4 * SPE]  # the LR panel, in steps
    assert "resumed, new LR plan" in [t.get_text() for t in dash.fig.axes[2].get_legend().get_texts()]
    assert panels.lr_plan_changes([{"step": 3, "changes": {"clip_norm": (1.0, 0.5)}}]) == []
