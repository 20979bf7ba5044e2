"""How `fit` ends, whatever ended it: a stop on non-finite steps names the first non-finite module
and the newest clean checkpoint; then the final weights, metrics.json, the curves, the end of the
MLflow run and, on Google Drive, what the upload needs."""

from __future__ import annotations

from collections.abc import Callable

from nbtools.atomic import save_atomic
from nbtools.env import sync_drive
from nbtools.runs import NonFiniteError, Run, Stop
from nbtools.runs.files import LAST_FILE
from nbtools.runs.stop import RAISING_CODES
from nbtools.step import Distributed
from nbtools.train.guards import locate_first_nonfinite
from nbtools.train.mlflow_log import MlflowLog
from nbtools.train.saving import describe_newest_clean
from nbtools.train.state import TrainState
from nbtools.viz.curves import save_curves


def finish(
    st: TrainState,
    run: Run,
    last_step: list,
    loss_fn: Callable,
    progress,
    mlflow: MlflowLog,
    dist: Distributed,
) -> Run:
    """Write what a run leaves behind and return `run`; raise NonFiniteError (with `.run`) after
    writing it when the run stopped on non-finite steps. last_step: the last step's micro-batches."""
    run_dir = run.run_dir
    raises = run.stop is not None and run.stop.code in RAISING_CODES
    located = (
        locate_first_nonfinite(run, st.model, last_step, loss_fn, st.precision)
        if raises and last_step
        else None
    )
    if located is not None:
        run.stop, findings = located
        for f in findings:
            run.add_finding(f)
    if run.stop is not None and run.stop.code == "nonfinite":
        clean = describe_newest_clean(run_dir)
        run.stop = Stop(run.stop.code, f"{run.stop.message} {clean[0].upper()}{clean[1:]}.")
    if dist.is_main:
        save_atomic(st.model.state_dict(), run_dir / LAST_FILE)
        run.save()
        save_curves(run)
        mlflow.end(run)  # the figures, best.pt and the final findings, once they are written
        if sync_drive(run_dir):  # Drive uploads in the background; the notebook keeps it mounted
            progress.message(
                f"{run_dir} is on Google Drive, which uploads it in the background; before closing the runtime, "
                f"google.colab.drive.flush_and_unmount() waits for the upload (and unmounts Drive)"
            )
    dist.barrier()
    if run.stop is not None:
        progress.message(f"stopped: {run.stop}")
    if raises:
        raise NonFiniteError(run.stop.message, run)
    return run
