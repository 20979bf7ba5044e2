"""The fit loop: `fit` (fit.py) reads prepare (prepare.py, start.py) -> epochs (epoch.py) -> finish
(finish.py). What a checkpoint holds is state.py (TrainState: model, optimizer, scheduler, precision,
EMA, early stopping, counters; saving.py writes it); what looks at each step and epoch is watcher.py
(telemetry, guards, the doctor's rules, findings, progress); the optimizer step itself is
nbtools.step.train_step. Around them: schedule, EMA, early stopping, unfreezing, the data order, RNG."""

from nbtools.train.fit import fit

__all__ = ["fit"]
