"""The live training dashboard for Jupyter and Colab.

`Dashboard` has TextProgress's interface (start_epoch, batches_done, interval, end_epoch, finding,
message, close) and shows an ipywidgets panel: a status line, a batch progress bar, one figure
(loss, gradient norms total and per group, LR, loss scale and skipped steps, weight drift,
validation metrics) and the findings as they are raised, open ones first, resolved ones marked.

Cost: the figure is drawn with matplotlib's Agg renderer into PNG bytes and assigned to an
`ipywidgets.Image`, replacing the last one (no flicker, no output that grows with every redraw).
Redraws are throttled: at a log interval only if max(min_redraw_seconds = 2 s, 20 x the last draw's
time) has passed since the last one, so these redraws take at most ~5 % of the wall time; always
at the end of an epoch and on close. The progress bar is updated at most every 0.2 s. Outside a notebook,
`fit` uses the text progress (tqdm bar, postfix per interval, one line per epoch); the choice is
nbtools.viz.progress.make_progress. Where widgets do not render the same parts are plain outputs
updated in place, and either way `close` leaves the last frame as a plain PNG (nbtools.viz.snapshot).
"""

from __future__ import annotations

import html
import io
import time

from matplotlib.figure import Figure

from nbtools.runs import Finding, open_first
from nbtools.runs.classes import class_names
from nbtools.viz import panels, snapshot, term_panels
from nbtools.wording import reword

BAR_SECONDS = 0.2  # the progress bar is updated at most this often
DRAW_BUDGET = 20  # wait at least this many times the last draw's duration before the next


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _finding_html(f: Finding) -> str:
    where = "" if f.epoch is None else f" (epoch {f.epoch})"
    message, fix = html.escape(reword(f.message)), html.escape(reword(f.fix))
    text = f"<b>[{html.escape(f.code)}]</b>{where} {message}<br><i>fix:</i> {fix}"
    if f.is_open:
        return f"<li>{text}</li>"
    at = "" if f.resolved_epoch is None else f" at epoch {f.resolved_epoch}"
    return f"<li style='color:#777'><b>resolved{at}:</b> {text}</li>"


class Dashboard:
    """The panel fed by `fit`, displayed on construction: ipywidgets (`.widget` is the VBox) or, with
    view="image", plain outputs updated in place. `close` leaves the last frame as a plain PNG."""

    def __init__(
        self,
        epochs: int,
        min_redraw_seconds: float = 2.0,
        display: bool = True,
        view: str = "widgets",
        classes: list[str] | None = None,
    ):
        self.epochs, self.min_redraw_seconds = epochs, min_redraw_seconds
        self.classes = classes  # the run's class names (nbtools.runs.classes), None when it has none
        self.steps: list[dict] = []
        self.history: list[dict] = []
        self.findings: list[Finding] = []
        self.messages: list[str] = []
        self.config_changes: list[dict] = []  # a resume's, for the marks on the LR panel
        # view: "widgets" (an ipywidgets panel) or "image" (plain outputs updated in place); see snapshot
        self._use(snapshot.WidgetView(display) if view == "widgets" else snapshot.OutputView(display))
        self.widget = getattr(self.view, "widget", None)
        self.fig = Figure(figsize=(13, 6.5))
        self.redraws = 0
        self._epoch, self._done, self._bar_at = 0, 0, 0.0
        self._drawn_at, self._draw_seconds, self._drawn_len = -float("inf"), 0.0, (0, 0)

    def _use(self, view) -> None:
        self.view = view
        self.status, self.bar, self.image, self.findings_box = view.parts()

    # --- the progress interface fit calls ------------------------------------------------
    def start_epoch(self, epoch: int, total_batches: int, done_batches: int) -> None:
        self._epoch, self._done = epoch, done_batches
        self.bar.max, self.bar.value = max(1, total_batches), done_batches
        self.bar.description = f"epoch {epoch}/{self.epochs}"
        self._update_status()

    def batches_done(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._bar_at >= BAR_SECONDS:  # every step would be one comm message per step
            self.bar.value, self._bar_at = self._done, now

    def interval(self, record: dict) -> None:
        self.steps.append(record)
        self.bar.value = self._done
        self._update_status()
        if time.monotonic() - self._drawn_at >= max(
            self.min_redraw_seconds, DRAW_BUDGET * self._draw_seconds
        ):
            self.draw()

    def end_epoch(self, record: dict) -> None:
        self.history.append(record)
        self.bar.value = self.bar.max
        self._update_status()
        self.draw()

    def resumed(self, run) -> None:
        """Start from a resumed run's restored history, telemetry and findings."""
        self.steps, self.history = list(run.steps), list(run.history)
        self.config_changes = list(run.config_changes)
        self.classes = self.classes or class_names(run.meta)
        for f in run.findings:
            self.finding(f)
        self._update_status()
        self.draw()

    def finding(self, finding: Finding) -> None:
        """Show a new finding, or a known one again with its new status (open ones first)."""
        self.findings = [f for f in self.findings if f.code != finding.code] + [finding]
        self.findings = open_first(self.findings)
        self.findings_box.value = (
            "<div style='border:1px solid #c33;padding:4px 8px'><b>findings</b>"
            f"<ul>{''.join(map(_finding_html, self.findings))}</ul></div>"
        )

    def message(self, text: str) -> None:
        self.messages.append(reword(text))
        self._update_status()

    def close(self) -> None:
        if (len(self.steps), len(self.history)) != self._drawn_len:
            self.draw()
        self.bar.bar_style = "warning" if any(f.is_open for f in self.findings) else "success"
        self._use(self.view.leave())  # a plain PNG and text stay in the notebook, whatever ended the run

    # --- drawing -------------------------------------------------------------------------
    def _update_status(self) -> None:
        s = self.steps[-1] if self.steps else {}
        h = self.history[-1] if self.history else {}
        lr = next(iter(s.get("lr", {}).values()), None)
        parts = [
            f"<b>epoch {self._epoch}/{self.epochs}</b>",
            f"step {s.get('step', 0)}",
            f"loss {_fmt(s.get('loss'))}",
            f"grad norm {_fmt(s.get('grad_norm'))}",
            f"lr {_fmt(lr)}",
            f"skipped {sum(r['skipped'] for r in self.steps)}",
        ]
        if s.get("scale") is not None:
            parts.append(f"scale {_fmt(s['scale'])}")
        parts += [f"{k} {_fmt(h[k])}" for k in ("val_loss", "val_auc", "val_f1") if h.get(k) is not None]
        note = "".join(f"<br><small>{html.escape(m)}</small>" for m in self.messages[-3:])
        self.status.value = " &middot; ".join(parts) + note

    def draw(self) -> None:
        """Render the figure to PNG (Agg) and put it in the Image widget."""
        t0 = time.perf_counter()
        self.fig.clear()
        terms = term_panels.has_terms(self.steps)  # a MultiTaskLoss run: a column of per-term panels
        self.fig.set_size_inches(17 if terms else 13, 6.5)
        axes = self.fig.subplots(2, 4 if terms else 3)
        # fixed margins: a constrained layout would double the cost of each redraw
        self.fig.subplots_adjust(left=0.05, right=0.95, top=0.95, bottom=0.08, wspace=0.4, hspace=0.35)
        panels.loss_panel(axes[0, 0], self.steps, self.history)
        panels.grad_panel(axes[0, 1], self.steps)
        panels.lr_panel(axes[0, 2], self.steps, self.config_changes)
        panels.metrics_panel(axes[1, 0], self.history, self.classes)
        panels.scale_panel(axes[1, 1], self.steps)
        panels.drift_panel(axes[1, 2], self.steps)
        if terms:
            term_panels.term_grad_panel(axes[0, 3], self.steps)
            term_panels.term_cos_panel(axes[1, 3], self.steps)
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=72)
        self.image.value = buf.getvalue()
        self.redraws += 1
        self._drawn_len = (len(self.steps), len(self.history))
        self._drawn_at = time.monotonic()
        self._draw_seconds = time.perf_counter() - t0
