"""What `fit` shows while it trains: a tqdm bar per epoch, its postfix at each log interval, and
one summary line per epoch; or, in a notebook, the dashboard in nbtools.viz.dashboard, which takes
the same calls. `make_progress` chooses.

Showing never stops training: the text goes through `QuietStream`, so when whoever reads it has gone
(`... | tee log` and Ctrl-C, which ends `tee` first; a closed output), writing fails quietly and `fit`
still keeps the last step and records the stop. Messages name options for the chosen audience
(nbtools.wording)."""

from __future__ import annotations

import importlib.util
import logging
import sys
from contextlib import contextmanager

from tqdm.auto import tqdm

from nbtools.runs import Finding
from nbtools.viz.dashboard import Dashboard
from nbtools.viz.frontend import widgets_render
from nbtools.wording import reword

log = logging.getLogger(__name__)


class QuietStream:
    """A text stream whose writes and flushes fail quietly once its reader is gone: a broken pipe
    (OSError) or a closed file (ValueError). `.broken` says one failed; the rest is the stream's."""

    def __init__(self, stream):
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        with self._reader_gone():
            return self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        with self._reader_gone():
            self.stream.flush()

    @contextmanager
    def _reader_gone(self):
        try:
            yield
        except OSError:  # EPIPE, EIO ...: nobody reads this any more
            self.broken = True
        except ValueError as e:
            if "closed" not in str(e):  # only "I/O operation on closed file" is a reader gone
                raise
            self.broken = True

    def __getattr__(self, name: str):
        return getattr(self.stream, name)

    # equal to the stream it wraps: tqdm.write clears the bars of the stream it writes to (or of
    # sys.stdout / sys.stderr, which share a terminal) by comparing streams
    def __eq__(self, other) -> bool:
        return self.stream == getattr(other, "stream", other)

    def __hash__(self) -> int:
        return hash(self.stream)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


class TextProgress:
    def __init__(self, epochs: int, enabled: bool = True):
        self.epochs, self.enabled = epochs, enabled
        self.bar: tqdm | None = None

    def start_epoch(self, epoch: int, total_batches: int, done_batches: int) -> None:
        if self.enabled:
            self.bar = tqdm(
                total=total_batches,
                initial=done_batches,
                desc=f"epoch {epoch}/{self.epochs}",
                leave=False,
                file=QuietStream(sys.stderr),  # the stream of now: pytest and notebooks swap it
            )

    def batches_done(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def interval(self, record: dict) -> None:
        if self.bar is not None:
            lr = next(iter(record["lr"].values()), None)
            self.bar.set_postfix(  # shown at the bar's next refresh (tqdm's mininterval), not redrawn now
                loss=_fmt(record["loss"]),
                gnorm=_fmt(record["grad_norm"]),
                lr=_fmt(lr),
                skipped=record["skipped"],
                refresh=False,
            )

    def end_epoch(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            keys = (
                *("train_loss", "val_loss", "val_acc", "val_f1", "val_auc", "ema_val_auc"),
                *(
                    "val_dice",
                    "ema_val_dice",
                    "val_mae",
                    "val_rmse",
                    "val_r2",
                    "ema_val_r2",
                ),  # seg, regression
            )
            shown = "  ".join(f"{k} {_fmt(record[k])}" for k in keys if k in record)
            _write(f"epoch {record['epoch']}/{self.epochs}  {shown}  ({record['seconds']:.1f}s)")

    def resumed(self, run) -> None:
        if self.enabled and run.history:
            best = f", best epoch {run.best_epoch}" if run.best_epoch else ""
            n_open = sum(f.is_open for f in run.findings)
            _write(
                f"restored {len(run.history)} epochs of history{best}; findings so far: {n_open} open, "
                f"{len(run.findings) - n_open} resolved"
            )

    def finding(self, finding: Finding) -> None:
        """A new finding, or a known one whose status changed (str shows "resolved at epoch N")."""
        if self.enabled:
            _write(str(finding))

    def message(self, text: str) -> None:
        if self.enabled:
            _write(reword(text))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _write(text: str) -> None:
    """A line above the bar, on standard output."""
    tqdm.write(text, file=QuietStream(sys.stdout))


DASHBOARDS = ("auto", "text", "widgets", "image", "off", None)


def in_notebook() -> bool:
    """True inside a Jupyter or Colab kernel (not a terminal IPython, not a script)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def make_progress(dashboard: str | None, epochs: int, enabled: bool = True, classes: list[str] | None = None):
    """What `fit` shows. "auto": in a notebook kernel the dashboard, as ipywidgets where they render
    and as plain outputs updated in place where they do not (the rule: nbtools.viz.frontend); text
    progress outside a kernel. "widgets" / "image" choose the view (text, with a warning, outside a
    kernel); "text"; None or "off" = nothing. Either dashboard leaves a plain PNG when training ends.
    classes: the run's class names, for the dashboard's labels."""
    if dashboard not in DASHBOARDS:
        raise ValueError(f"dashboard must be one of {', '.join(map(repr, DASHBOARDS))}, got {dashboard!r}")
    if not enabled or dashboard in (None, "off"):
        return TextProgress(epochs, enabled=False)
    if dashboard == "text":
        return TextProgress(epochs)
    if not in_notebook():
        if dashboard != "auto":
            log.warning("dashboard=%r needs a Jupyter/Colab kernel; showing text progress", dashboard)
        return TextProgress(epochs)
    if dashboard == "auto":
        render, why = widgets_render()
        if not render:
            log.info("dashboard as an image output: %s", why)
        dashboard = "widgets" if render else "image"
    elif dashboard == "widgets" and importlib.util.find_spec("ipywidgets") is None:
        log.warning("dashboard='widgets' needs ipywidgets; showing the dashboard as an image output")
        dashboard = "image"
    return Dashboard(epochs, view=dashboard, classes=classes)
