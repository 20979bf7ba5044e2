"""The stop button: a KeyboardInterrupt keeps the last completed step, says how to resume, re-raises.

Jupyter's and Colab's stop button sends SIGINT, which Python turns into a KeyboardInterrupt wherever
the code happens to be: between `backward()` and the optimizer, halfway through a foreach Adam
update, between the optimizer and the scheduler. A checkpoint of such a state would be neither the
step before nor the one after. So while `fit` runs, `Interrupts` holds a press back until the step
(loading its batches, forward, backward, update, telemetry) or the epoch end (validation, the epoch
checkpoint) in flight is done; there the KeyboardInterrupt is raised, at a clean boundary, and
`keep_interrupted` writes the mid-epoch checkpoint of that step (epoch_NNN_step_SSSSSSS.pt,
atomically). A second press does not wait (a stuck loader, an impatient user): it interrupts at
once, and as that step is half done no checkpoint is written of it; the ones on disk are intact. A
KeyboardInterrupt raised by code inside a step (a dataset, a hook) is treated the same way.

Only SIGINT in the main thread is held back (Python delivers signals there only); elsewhere, and
under torchrun (where ranks would be interrupted at different steps), an interrupt keeps the
checkpoints already written and says so.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

from nbtools.atomic import save_atomic
from nbtools.runs import Stop, list_checkpoints
from nbtools.runs.files import mid_epoch_name
from nbtools.train.saving import nonfinite_state


class Interrupts:
    """SIGINT handling for one `fit` call: `with interrupts:` installs it, `critical()` marks the
    stretches a first press waits for. Outside `with`, `critical()` changes nothing."""

    def __init__(self) -> None:
        self.deferring = False  # inside critical(): a first press is held back
        self.pending = False  # a press is being held back
        self.partial = False  # a KeyboardInterrupt left a critical stretch half done
        self._previous = None
        self._critical = _Critical(self)  # one object, entered at every step

    def __enter__(self) -> Interrupts:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: signals go elsewhere, Python's handling stays
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.deferring and not self.pending:
            self.pending = True
            return
        raise KeyboardInterrupt

    def critical(self) -> _Critical:
        """`with` it around a stretch that must happen whole: a first press waits for its end, then
        interrupts."""
        return self._critical

    def save(self, state: dict, path) -> None:
        """save_atomic, a first press during it held back (it would only cost the checkpoint)."""
        self.deferring, self.pending = True, False
        try:
            save_atomic(state, path)
        finally:
            self.deferring, self.pending = False, False


class _Critical:
    """`Interrupts.critical()`: a class, not a generator context manager, as it is entered at every step."""

    def __init__(self, interrupts: Interrupts) -> None:
        self.interrupts = interrupts

    def __enter__(self) -> None:
        self.interrupts.deferring = True

    def __exit__(self, exc_type, exc, tb) -> None:
        it = self.interrupts
        it.deferring = False
        if exc_type is not None:
            if issubclass(exc_type, KeyboardInterrupt):
                it.partial = True
            return
        if it.pending:
            it.pending = False
            raise KeyboardInterrupt


def _resume_hint(run_dir) -> tuple[str, bool]:
    """How to go on, and whether there is a checkpoint to go on from."""
    found = list_checkpoints(run_dir).valid()
    if not found:
        return f"no checkpoint in {run_dir} yet: nothing to resume; start the run again as before", False
    # in Python's words; the progress, the CLI and the notebooks show theirs (nbtools.wording)
    return f'the newest checkpoint is {found[-1].path.name}: to continue, fit(..., resume="latest")', True


def keep_interrupted(st, run, watcher, dist, interrupts: Interrupts) -> None:
    """After a KeyboardInterrupt in fit's loop: write the checkpoint of the last completed step
    (when it is whole, new and finite), record the stop, save metrics.json and say how to resume."""
    run_dir = run.run_dir
    where = f"epoch {st.epoch}, batch {st.batch}, step {st.step}"
    if interrupts.partial:
        kept = (
            f"interrupted inside step {st.step + 1} (a second press of stop, or a KeyboardInterrupt raised "
            f"inside the step): it was half done, so no checkpoint was written of it (press stop once and "
            f"wait for the step to end to keep it); the last completed step was {where}"
        )
    elif dist.active:
        kept = f"interrupted at {where}; under torchrun no checkpoint is written on an interrupt"
    elif st.batch == 0:
        kept = f"interrupted at the start of epoch {st.epoch}: nothing new since epoch {st.epoch - 1}"
    else:
        path = run_dir / mid_epoch_name(st.epoch, st.step)
        bad = nonfinite_state(st)
        if bad is not None:
            kept = f"interrupted at {where}; not checkpointed, as its state is not finite ({bad})"
        else:
            if not path.exists():
                interrupts.save(st.to_checkpoint(run, watcher.state_dict(), dist), path)
            kept = f"interrupted: kept the last completed step ({where}) in {path.name}"
    hint, resumable = _resume_hint(run_dir)
    run.stop = Stop("interrupted", f"{kept}; {hint}")
    if dist.is_main and resumable:  # with nothing to resume, leave no run file behind
        run.save()
    watcher.progress.message(run.stop.message)


@contextmanager
def checkpoint_on_interrupt(st, run, watcher, dist, interrupts: Interrupts):
    """`with` this around fit's loop: SIGINT is `interrupts`' (held back in critical stretches), and a
    KeyboardInterrupt runs `keep_interrupted` (a press during its write still held back) and re-raises."""
    with interrupts:
        try:
            yield
        except KeyboardInterrupt:
            keep_interrupted(st, run, watcher, dist, interrupts)
            raise
