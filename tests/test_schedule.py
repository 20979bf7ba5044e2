"""The LR plan across a resume: more epochs, a new LR, a restart, or nothing new; never a jump
larger than the ramp allows, always ending at the floor, and an unchanged plan exactly as before.

Each case runs the scheduler alone (the same calls TrainState and start make: build, state_dict
through torch.save / torch.load(weights_only=True), load_state_dict, resume_plan), 32 steps an epoch.
"""

import io
import itertools
from collections import OrderedDict

import pytest
import torch
from torch import nn

import nbtools as nbt
from nbtools.train.optim import build_optimizer
from nbtools.train.schedule import build_scheduler, factor_at, floor_advice, resume_plan, warmup_cosine

SPE = 32
OLD = nbt.TrainConfig(epochs=4, lr=1e-3, warmup_epochs=1, min_lr_factor=0.01)


def _model():
    return nn.Sequential(OrderedDict(body=nn.Linear(2, 2), head=nn.Linear(2, 1)))


def _build(cfg):
    opt = build_optimizer(_model(), cfg)
    return opt, build_scheduler(opt, round(cfg.warmup_epochs * SPE), cfg.epochs * SPE, cfg.min_lr_factor)


def _steps(opt, sch, n, lrs):
    for _ in range(n):
        lrs.append([g["lr"] for g in opt.param_groups])  # the LR this optimizer step runs at
        opt.step()
        sch.step()


def _checkpoint(opt, sch):
    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sch.state_dict()}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _resume(state, old, new, step):
    opt, sch = _build(new)
    opt.load_state_dict(state["optimizer"])
    sch.load_state_dict(state["scheduler"])
    return opt, sch, resume_plan(sch, state["scheduler"], old, new, step, SPE)


def _lrs(old, new, at, end_lrs=False):
    """LRs (per step, per group) of `old` trained `at` steps, then resumed under `new` to its end."""
    opt, sch = _build(old)
    lrs = []
    _steps(opt, sch, at, lrs)
    opt, sch, plan = _resume(_checkpoint(opt, sch), old, new, at)
    _steps(opt, sch, new.epochs * SPE - at, lrs)
    return lrs, sch.get_last_lr(), plan


def _ratios(lrs, start, stop=None, group=0):
    seq = [r[group] for r in lrs[start:stop]]
    return [max(a / b, b / a) for a, b in itertools.pairwise(seq)]


def _never_rises(lrs, start, group=0):
    seq = [r[group] for r in lrs[start:]]
    return all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(seq))


def _old_lr_at(step):
    opt, sch = _build(OLD)
    _steps(opt, sch, step, [])
    return [g["lr"] for g in opt.param_groups]


def _ramp_allows(now, target, ramp):
    """The largest ratio between consecutive steps of a linear ramp from `now` to `target`."""
    return 1 + abs(target - now) / (ramp * min(now, target))


# The largest step-to-step ratio of these cosines (32 steps an epoch) in the half epoch after a resume
# (or its ramp). Closer to the floor a cosine's own steps reach ~1.15x (a straight run's too), so
# from there on the check is that the LR never rises again.
SMOOTH = 1.05
WINDOW = SPE // 2


@pytest.mark.parametrize(
    ("case", "new", "at", "ramp_to", "ramp", "message"),
    [
        ("more epochs, at the end", OLD.replace(epochs=8), 4 * SPE, None, 0, "stays at its floor, 1e-5, for 4 epochs: the run had already decayed to it"),
        ("more epochs, mid-plan", OLD.replace(epochs=8), 2 * SPE, None, 0, "continues from 7.52e-4 and decays to 1e-5 over 6 epochs"),
        ("lower LR", OLD.replace(lr=1e-4, epochs=6), 2 * SPE, 1e-4, 8, "ramps from 7.52e-4 to 1e-4 over 8 steps, then decays to 1e-6"),
        ("higher LR", OLD.replace(lr=1e-4, epochs=8), 4 * SPE, 1e-4, 8, "ramps from 1e-5 to 1e-4 over 8 steps, then decays to 1e-6"),
        ("restart", OLD.replace(epochs=8, schedule="restart"), 4 * SPE, 1e-3, SPE, "restarts (schedule='restart'): ramps from 1e-5 to 1e-3 over 32 steps"),
        ("new ramp length", OLD.replace(lr=1e-4, epochs=6, warmup_epochs=0.5), 2 * SPE, 1e-4, 16, "over 16 steps"),
    ],
)  # fmt: skip
def test_no_jump_at_the_resume_and_the_run_ends_at_the_floor(case, new, at, ramp_to, ramp, message):
    lrs, last, plan = _lrs(OLD, new, at)
    assert lrs[at] == _old_lr_at(at), "the first resumed step runs at the LR the run was at"
    before = _ratios(lrs, at - 1, at + 1)
    assert before[0] <= SMOOTH, f"{case}: LR jumped by {before[0]:.3g}x at the resume"
    if ramp:
        allowed = _ramp_allows(lrs[at][0], ramp_to, ramp)
        assert max(_ratios(lrs, at, at + ramp + 1)) <= allowed * (1 + 1e-9), f"{case}: a jump in the ramp"
        assert lrs[at + ramp][0] == pytest.approx(ramp_to), f"{case}: the ramp reaches the new LR"
    after = _ratios(lrs, at + ramp, at + ramp + WINDOW)
    assert max(after) <= SMOOTH, f"{case}: LR jumped by {max(after):.3g}x after the resume"
    assert _never_rises(lrs, at + ramp), f"{case}: the LR rose again after the resume"
    assert last == pytest.approx([new.lr * new.min_lr_factor], rel=1e-12), "ends at the floor"
    assert message in plan["lr_plan"][0], plan
    assert len(plan["lr_plan"]) == (2 if "floor" in message else 1), "the ways on, only at the floor"


def test_an_unchanged_plan_is_the_straight_run_exactly():
    lrs, last, plan = _lrs(OLD, OLD.replace(clip_norm=0.5, warmup_epochs=2), 2 * SPE + 5)
    straight, straight_last, _ = _lrs(OLD, OLD, 4 * SPE)
    assert plan == {} and lrs == straight and last == straight_last


def test_a_new_group_lr_ramps_that_group_only():
    old = OLD.replace(group_lrs={"head": 1e-2})
    new = old.replace(group_lrs={"head": 1e-3})
    lrs, last, plan = _lrs(old, new, 2 * SPE)
    straight, _, _ = _lrs(old, old, 2 * SPE)
    assert [r[1] for r in lrs] == [r[1] for r in straight], "the default group keeps its plan exactly"
    ramp = _ratios(lrs, 2 * SPE, 2 * SPE + 9, group=0)
    assert max(ramp) <= _ramp_allows(lrs[2 * SPE][0], 1e-3, 8) * (1 + 1e-9)
    assert _never_rises(lrs, 2 * SPE + 8, group=0) and last[0] == pytest.approx(1e-5)
    assert plan["lr_plan"] == [
        "LR [head] ramps from 7.52e-3 to 1e-3 over 8 steps, then decays to 1e-5 over 56 steps (1.8 epochs)"
    ]


def test_the_plan_survives_a_resume_of_a_resume():
    """More epochs at step 64, a disconnect at step 100 (same config), then a new LR at step 150:
    each resume continues the curve the run is on, not the one its config would draw from scratch."""
    more = OLD.replace(epochs=8)
    opt, sch = _build(OLD)
    lrs = []
    _steps(opt, sch, 64, lrs)
    opt, sch, _ = _resume(_checkpoint(opt, sch), OLD, more, 64)
    _steps(opt, sch, 36, lrs)
    state = _checkpoint(opt, sch)
    uninterrupted = list(lrs)
    _steps(opt, sch, 8 * SPE - 100, uninterrupted)
    opt, sch, plan = _resume(state, more, more, 100)  # a disconnect: the plan comes from the checkpoint
    assert plan == {}
    _steps(opt, sch, 50, lrs)
    assert lrs == uninterrupted[:150]
    lower = more.replace(lr=1e-4)
    opt, sch, plan = _resume(_checkpoint(opt, sch), more, lower, 150)
    assert plan["lr_plan"][0].startswith("LR ramps from 4.") and "to 1e-4 over 8 steps" in plan["lr_plan"][0]
    _steps(opt, sch, 8 * SPE - 150, lrs)
    assert lrs[150] == uninterrupted[150]
    assert max(_ratios(lrs, 150, 159)) <= _ramp_allows(lrs[150][0], 1e-4, 8) * (1 + 1e-9)
    assert _never_rises(lrs, 158) and sch.get_last_lr()[0] == pytest.approx(1e-6)


def test_a_checkpoint_from_before_plans_were_recorded_continues_its_old_curve():
    opt, sch = _build(OLD)
    _steps(opt, sch, 4 * SPE, [])
    state = _checkpoint(opt, sch)
    state["scheduler"]["lr_lambdas"] = [{}]  # what functools.partial lambdas saved
    lrs = []
    opt, sch, plan = _resume(state, OLD, OLD.replace(epochs=8), 4 * SPE)
    _steps(opt, sch, 4 * SPE, lrs)
    assert plan["lr_plan"][0].endswith(
        "stays at its floor, 1e-5, for 4 epochs: the run had already decayed to it"
    )
    assert lrs[0] == [1e-5] and _never_rises(lrs, 0)


def test_extending_a_finished_run_says_the_lr_is_at_its_floor_and_both_ways_on_work():
    """Issue 25: 4 more epochs of a finished run train at the floor LR; the message says so in plain
    words and names a new LR and a restart, and each of the two does lift the LR."""
    more = OLD.replace(epochs=8)
    _, _, plan = _lrs(OLD, more, 4 * SPE)
    floor, advice = plan["lr_plan"]
    assert floor == "LR stays at its floor, 1e-5, for 4 epochs: the run had already decayed to it"
    assert "e.g. lr=5e-4: a short ramp up to it" in advice and 'schedule="restart"' in advice, advice
    assert "configured 1e-3" in advice
    for way in (more.replace(lr=5e-4), more.replace(schedule="restart")):
        lrs, _, plan = _lrs(OLD, way, 4 * SPE)
        assert max(r[0] for r in lrs[4 * SPE :]) >= 5e-4 and len(plan["lr_plan"]) == 1, plan
    # a step short of the end: near its floor, said the same way
    _, _, plan = _lrs(OLD, more, 4 * SPE - 2)
    assert plan["lr_plan"][0].startswith("LR is near its floor already: 1.11e-5, decaying to 1e-5")
    assert plan["lr_plan"][1] == advice
    # mid-plan, the LR is well above its floor: no advice
    assert len(_lrs(OLD, more, 3 * SPE + 16)[2]["lr_plan"]) == 1


def test_the_ways_on_can_be_named_in_other_terms():
    """The CLI names its flags: the advice is built in one function that takes the terms."""
    cli = {"lr": "--lr {lr}", "group_lrs": "--set group_lrs={lrs}", "restart": "--schedule restart"}
    advice = floor_advice(OLD.replace(group_lrs={"head": 1e-2}), cli)
    assert "e.g. --lr 5e-4, --set group_lrs={'head': 5e-3}: a short" in advice, advice
    assert "or with --schedule restart (a warmup to the configured 1e-3, 1e-2 again" in advice
    assert "lr=" not in advice.replace("group_lrs=", "")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("schedule", "cosine", "one of 'continue', 'restart'"), ("warmup_epochs", -0.5, "a finite number >= 0")],
)
def test_bad_schedule_values_name_the_field(field, value, expected):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} must be {expected}"):
        nbt.TrainConfig(**{field: value})
    assert nbt.TrainConfig(warmup_epochs=0.5).warmup_epochs == 0.5


def test_each_group_runs_at_its_base_lr_times_the_plan_and_the_state_continues_it():
    """At every step (through warmup, the decay and past its end) a group's LR is its base LR x the
    plan's factor, get_last_lr gives the same, and the state_dict loaded into a new scheduler (after
    a torch.save / torch.load round trip) continues the curve."""
    cfg = OLD.replace(group_lrs={"head": 3e-3})
    segments = warmup_cosine(round(cfg.warmup_epochs * SPE), cfg.epochs * SPE, cfg.min_lr_factor)
    opt, sch = _build(cfg)
    bases = [3e-3, 1e-3]  # head, default
    for step in range(1, cfg.epochs * SPE + 6):
        opt.step()
        sch.step()
        expected = [base * factor_at(segments, step) for base in bases]
        assert [g["lr"] for g in opt.param_groups] == expected == sch.get_last_lr(), step
        if step == SPE + 3:
            opt, sch = _resume(_checkpoint(opt, sch), cfg, cfg, step)[:2]
    assert sch.last_epoch == cfg.epochs * SPE + 5


def test_the_scheduler_keeps_lambda_lrs_warning_for_a_step_before_the_optimizers():
    _, sch = _build(OLD)
    with pytest.warns(UserWarning, match="before `optimizer.step"):
        sch.step()
