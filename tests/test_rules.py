"""The doctor's rules on constructed histories: each fires on its failure, none on a healthy run."""

import itertools
import math

import torch

import nbtools as nbt
from nbtools.diagnose import rules
from nbtools.diagnose.inputs import input_range
from nbtools.runs import Run, Stop


def step(i, epoch=1, loss=0.6, grad=1.0, gmax=None, drift=1e-2, norm=10.0, n=10, skipped=0, nonfinite=0):
    return {
        "epoch": epoch,
        "step": i * n,
        "steps": n,
        "loss": loss,
        "loss_last": loss,
        "grad_norm": grad,
        "grad_norm_max": grad if gmax is None else gmax,
        "group_grad_norm": {"backbone": grad, "default": grad / 2},
        "lr": {"backbone": 1e-4, "default": 1e-3},
        "scale": None,
        "skipped": skipped,
        "skipped_steps": list(range(i * n - skipped + 1, i * n + 1)),
        "nonfinite_loss": nonfinite,
        "drift": drift,
        "param_norm": norm,
        "seconds": 0.1,
    }


def epoch(e, train=0.5, val=0.5, auc=0.8, cm=((30, 5), (4, 11))):
    n = sum(map(sum, cm))
    return {
        "epoch": e,
        "step": 10 * e,
        "train_loss": train,
        "val_loss": val,
        "val_auc": auc,
        "val_acc": (cm[0][0] + cm[1][1]) / n,
        "val_confusion": [list(r) for r in cm],
        "val_pred_pos_rate": (cm[0][1] + cm[1][1]) / n,
        "val_pos_rate": sum(cm[1]) / n,
        "lr": {"default": 1e-3},
    }


def make_run(tmp_path, steps=(), history=(), stop=None, **cfg):
    return Run(tmp_path, nbt.TrainConfig(**cfg), history=list(history), steps=list(steps), stop=stop)


def healthy(tmp_path, epochs=8):
    steps = [
        step(i, epoch=1 + (i - 1) // 3, loss=0.7 * 0.93**i, grad=2.0 * 0.97**i)
        for i in range(1, 3 * epochs + 1)
    ]
    history = [
        epoch(e, train=0.7 * 0.85**e, val=0.72 * 0.9**e, auc=0.6 + 0.04 * e) for e in range(1, epochs + 1)
    ]
    return make_run(tmp_path, steps, history, epochs=epochs)


def codes(run):
    return [f.code for f in nbt.doctor(run)]


def test_a_healthy_history_raises_nothing(tmp_path):
    assert codes(healthy(tmp_path)) == []


def test_frozen_weights_needs_two_frozen_intervals_with_steps_taken(tmp_path):
    steps = [step(1), step(2, drift=0.0), step(3, drift=0.0), step(4, drift=0.0), step(5)]
    f = rules.frozen_weights(make_run(tmp_path, steps))
    assert f.code == "frozen-weights" and "steps 11-40" in f.message and "30 optimizer steps" in f.message
    # one frozen interval is not enough; intervals whose steps were all skipped are the guards' business
    assert rules.frozen_weights(make_run(tmp_path, [step(1), step(2, drift=0.0), step(3)])) is None
    all_skipped = [step(i, drift=0.0, skipped=10) for i in (1, 2, 3)]
    assert rules.frozen_weights(make_run(tmp_path, all_skipped)) is None
    # relative: 1e-8 of a norm of 10 is 1e-7
    assert rules.frozen_weights(make_run(tmp_path, [step(i, drift=2e-7) for i in (1, 2)])) is None
    assert rules.frozen_weights(make_run(tmp_path, [step(i, drift=5e-8) for i in (1, 2)])) is not None


def test_exploding_gradients_against_the_running_median(tmp_path):
    steps = [step(i, grad=1.0) for i in range(1, 6)] + [step(6, grad=3.0, gmax=40.0), step(7, grad=1.0)]
    f = rules.exploding_gradients(make_run(tmp_path, steps))
    assert f.code == "exploding-gradients" and "up to step 60" in f.message and "40" in f.message
    assert "largest group there: backbone" in f.message
    steps[5] = step(6, grad=3.0, gmax=9.0)  # under 10x the median
    assert rules.exploding_gradients(make_run(tmp_path, steps)) is None
    # a spike needs a history to be a spike: the first intervals are never judged
    assert rules.exploding_gradients(make_run(tmp_path, [step(1), step(2, gmax=50.0)])) is None


def test_lr_too_high_on_early_divergence_only(tmp_path):
    rising = [step(1, loss=0.7), step(2, loss=1.0), step(3, loss=1.6, nonfinite=2), step(4, loss=9.0)]
    f = rules.lr_too_high(make_run(tmp_path, rising))
    assert f.code == "lr-too-high" and "from 0.7" in f.message and "to 9" in f.message
    assert "2 non-finite" in f.message
    one_bump = [step(1, loss=0.7), step(2, loss=1.5), step(3, loss=0.6)]
    assert rules.lr_too_high(make_run(tmp_path, one_bump)) is None
    late = [step(1, loss=0.7), step(2, epoch=4, loss=2.0), step(3, epoch=5, loss=3.0)]
    assert rules.lr_too_high(make_run(tmp_path, late)) is None


def test_class_collapse_is_one_class_predicted_for_consecutive_epochs(tmp_path):
    always_pos = ((0, 35), (0, 15))  # seed 000: recall 1.0 at precision = base rate 0.3
    hist = [epoch(1), epoch(2, cm=always_pos), epoch(3, cm=always_pos), epoch(4, cm=always_pos)]
    f = rules.class_collapse(make_run(tmp_path, history=hist, epochs=10))
    assert f.code == "class-collapse" and "epochs 2-4" in f.message and "class 1" in f.message
    assert "recall 1.00 at precision 0.30" in f.message
    always_neg = ((35, 0), (15, 0))
    assert (
        "class 0"
        in rules.class_collapse(
            make_run(tmp_path, history=[epoch(e, cm=always_neg) for e in (1, 2, 3)])
        ).message
    )
    # two epochs of a 10-epoch run are not yet a collapse; a 2-epoch run has only two
    assert rules.class_collapse(make_run(tmp_path, history=hist[:3], epochs=10)) is None
    assert rules.class_collapse(make_run(tmp_path, history=hist[:3], epochs=2)) is not None
    # 98 % predicted positive but the negatives it has are recalled: not a collapse
    nearly = ((1, 1), (0, 98))
    assert rules.class_collapse(make_run(tmp_path, history=[epoch(e, cm=nearly) for e in (1, 2, 3)])) is None


def test_no_learning_flat_loss_at_chance(tmp_path):
    flat = [epoch(e, train=0.693 - 0.001 * e, auc=0.5 + 0.01 * (e % 2)) for e in range(1, 7)]
    f = rules.no_learning(make_run(tmp_path, history=flat))
    assert f.code == "no-learning" and "epochs 1-5" in f.message and "AUC 0.50-0.51" in f.message
    learning_slowly = [epoch(e, train=0.693 * 0.97**e, auc=0.5) for e in range(1, 7)]
    assert rules.no_learning(make_run(tmp_path, history=learning_slowly)) is None
    flat_but_separating = [epoch(e, train=0.4, auc=0.8) for e in range(1, 7)]
    assert rules.no_learning(make_run(tmp_path, history=flat_but_separating)) is None
    assert rules.no_learning(make_run(tmp_path, history=flat[:4])) is None


def test_overfitting_val_up_train_down(tmp_path):
    hist = [epoch(e, train=0.6 - 0.05 * e, val=v) for e, v in enumerate([0.6, 0.5, 0.45, 0.52, 0.55, 0.6], 1)]
    run = make_run(tmp_path, history=hist)
    run.best_epoch = 3  # what fit kept in best.pt: the best val_loss (the monitor)
    f = rules.overfitting(run)
    assert f.code == "overfitting" and "0.45 (epoch 3)" in f.message and "(epoch 6)" in f.message
    assert "best.pt (epoch 3, the best val_loss" in f.fix and f.is_open
    # best.pt holds the monitored best, which need not be the val-loss minimum: the fix says which
    aucs = [0.7, 0.75, 0.8, 0.82, 0.85, 0.83]
    hist_auc = [dict(h, val_auc=a) for h, a in zip(hist, aucs)]
    run = make_run(tmp_path, history=hist_auc, monitor="val_auc")
    run.best_epoch = 5
    fix = rules.overfitting(run).fix
    assert "best.pt holds epoch 5 (the best val_auc), not the val-loss minimum at epoch 3" in fix, fix
    assert "best.pt (epoch 3" not in fix
    # nothing recorded about best.pt: no epoch is named for it
    assert (
        "best.pt (fit keeps the epoch of the best val_loss"
        in rules.overfitting(make_run(tmp_path, history=hist)).fix
    )
    noisy = [
        epoch(e, train=0.6 - 0.05 * e, val=v) for e, v in enumerate([0.6, 0.5, 0.45, 0.52, 0.47, 0.6], 1)
    ]
    assert rules.overfitting(make_run(tmp_path, history=noisy)) is None


# issue 25: val_acc 1.0 every epoch, val loss below the train loss (dropout and augmentation in it) and
# drifting up 0.0136 -> 0.0814 while the train loss falls 0.44 -> 0.168
SATURATED = list(
    zip(
        range(1, 9),
        [0.44, 0.36, 0.3, 0.26, 0.22, 0.2, 0.18, 0.168],
        [0.0136, 0.014, 0.02, 0.03, 0.045, 0.06, 0.07, 0.0814],
    )
)


def _saturated(drop: dict | None = None) -> list[dict]:
    """SATURATED's epochs at AUC and accuracy 1.0, or at `drop`'s AUC (and two errors) in its epochs."""
    drop = drop or {}
    wrong = ((28, 2), (0, 18))
    return [
        epoch(e, train=t, val=v, auc=drop.get(e, 1.0), cm=wrong if e in drop else ((30, 0), (0, 18)))
        for e, t, v in SATURATED
    ]


def test_overfitting_is_not_said_while_the_monitored_metric_is_at_its_best(tmp_path):
    hist = _saturated()
    assert [h["val_acc"] for h in hist] == [1.0] * 8 and all(h["val_loss"] < h["train_loss"] for h in hist)
    for monitor in ("val_auc", "val_acc"):
        run = make_run(tmp_path, history=hist, monitor=monitor)
        run.best_epoch = 1
        assert rules.overfitting(run) is None, monitor
    # the loss alone says overfitting only to a run that monitors the loss
    assert rules.overfitting(make_run(tmp_path, history=hist)).code == "overfitting"


def test_overfitting_is_said_when_the_metric_worsens_or_the_val_loss_passes_the_train_loss(tmp_path):
    # the same losses, but AUC and accuracy drop from epoch 4 on: the model got worse
    worse = _saturated({e: 0.9 for e in range(4, 9)})
    f = rules.overfitting(make_run(tmp_path, history=worse, monitor="val_auc"))
    assert f.code == "overfitting" and f.epoch == 6 and "val_auc 1 -> 0.9" in f.message, f
    assert rules.overfitting(make_run(tmp_path, history=worse, monitor="val_acc")).epoch == 6
    # AUC below its best (epoch 2) but not below the val-loss minimum's, val loss far above the train loss
    hist = [
        epoch(e, train=0.6 - 0.08 * e, val=v, auc=a)
        for e, v, a in zip(range(1, 7), [0.6, 0.5, 0.45, 0.52, 0.55, 0.6], [0.8, 0.9, 0.85, 0.86, 0.86, 0.87])
    ]
    f = rules.overfitting(make_run(tmp_path, history=hist, monitor="val_auc"))
    assert f.code == "overfitting" and "(epoch 6)" in f.message and f.is_open
    # ... and resolved once the metric is back at its best
    hist.append(epoch(7, train=0.1, val=0.62, auc=0.95))
    assert rules.overfitting(make_run(tmp_path, history=hist, monitor="val_auc")).status == "resolved"


def test_stopped_too_early_on_an_improving_trend_or_at_min_epochs(tmp_path):
    # seed 001: noisy but rising val_auc; the lucky best at epoch 3 was never beaten by min_delta
    aucs = [0.5, 0.55, 0.72, 0.6, 0.62, 0.64, 0.66, 0.68]
    hist = [epoch(e, auc=a) for e, a in enumerate(aucs, 1)]
    stop = Stop("early-stop", "early stopping: val_auc did not improve")
    f = rules.stopped_too_early(make_run(tmp_path, history=hist, stop=stop, monitor="val_auc", patience=5))
    assert f.code == "stopped-too-early" and "epochs 4-8" in f.message
    assert rules.stopped_too_early(make_run(tmp_path, history=hist, monitor="val_auc", patience=5)) is None
    plateau = [epoch(e, auc=a) for e, a in enumerate([0.5, 0.7, 0.8, 0.8, 0.79, 0.8, 0.8, 0.79], 1)]
    assert (
        rules.stopped_too_early(make_run(tmp_path, history=plateau, stop=stop, monitor="val_auc", patience=5))
        is None
    )
    f = rules.stopped_too_early(
        make_run(tmp_path, history=plateau, stop=stop, monitor="val_auc", patience=5, min_epochs=8)
    )
    assert "first that min_epochs=8 allowed" in f.message


def test_input_range():
    assert input_range(torch.randn(8, 1, 16, 16)) is None
    assert input_range(torch.rand(8, 3, 16, 16)) is None
    assert input_range(torch.randint(0, 10, (8, 4))) is None  # token ids are not checked
    raw = input_range(255 * torch.rand(8, 3, 16, 16))
    assert raw.code == "input-out-of-range" and "abs max" in raw.message and "std" in raw.message
    assert "std" in input_range(torch.rand(8, 3, 16, 16) / 255 / 255).message
    x = torch.randn(8, 1, 4, 4)
    x[2, 0, 1, 1] = math.nan  # the guards report NaN inputs, with their step
    assert input_range(x) is None
    x[3] = 1e4
    assert "abs max 1e+04" in input_range(x).message


def test_doctor_keeps_saved_guard_findings_and_re_derives_the_rest(tmp_path):
    run = healthy(tmp_path)
    run.history[-3:] = [epoch(e, cm=((0, 35), (0, 15))) for e in (6, 7, 8)]
    guard = nbt.runs.Finding("nonfinite-loss", "3 optimizer steps skipped", "fix", epoch=2)
    stale = nbt.runs.Finding("class-collapse", "old evidence", "fix")
    run.findings = [guard, stale]
    run.save()
    found = nbt.doctor(tmp_path)
    assert [f.code for f in found] == ["nonfinite-loss", "class-collapse"]
    assert found[0] == guard and "epochs 6-8" in found[1].message


def test_lr_too_high_against_the_chance_level_and_the_first_step(tmp_path):
    def run_of(losses, nonfinite=()):
        steps = [step(i, loss=v, nonfinite=10 if i in nonfinite else 0) for i, v in enumerate(losses, 1)]
        steps[0]["loss_first"] = 0.7  # the loss before any update
        run = make_run(tmp_path, steps)
        run.task = {"outputs": 2, "pos_rate": 0.4, "chance_loss": math.log(2), "labels": "dataset"}
        return run

    # exploded within the first interval and stayed there: nothing "rises" after the first interval
    f = rules.lr_too_high(run_of([600.0, 400.0, 500.0]))
    assert (
        f.code == "lr-too-high" and "reached 600" in f.message and "866x the chance level 0.693" in f.message
    )
    assert (
        f.is_open
        and rules.lr_too_high(
            make_run(tmp_path, [step(i, loss=v) for i, v in enumerate([600.0, 400.0, 500.0], 1)])
        )
        is None
    )
    # one exploded interval and then only non-finite losses counts twice; non-finite from the start does not
    assert rules.lr_too_high(run_of([600.0, None], nonfinite={2})) is not None
    assert rules.lr_too_high(run_of([None, None, None], nonfinite={1, 2, 3})) is None
    # back below the bound: resolved at the first interval of the trailing stretch
    gone = rules.lr_too_high(run_of([600.0, 400.0, 0.6, 0.5]))
    assert gone.status == "resolved" and gone.resolved_epoch == 1
    assert rules.lr_too_high(run_of([0.7, 0.6, 0.5, 0.4])) is None  # healthy


def test_fit_runs_the_step_rules_at_every_interval_of_a_short_run_and_at_a_bounded_cost_in_a_long_one():
    dense = rules.STEP_RULES_DENSE
    assert all(rules.step_rules_due(n) for n in range(1, dense + 1))
    n = 40 * dense
    due = [k for k in range(1, n + 1) if rules.step_rules_due(k)]
    assert all(k / (k - j) <= dense for j, k in itertools.pairwise(due))  # records a pass reads per interval
    assert max(k - j for j, k in itertools.pairwise(due)) < 2 * n / dense  # how long a finding can wait
