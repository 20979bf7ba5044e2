"""Where the dashboard shows, and the plain picture it leaves behind.

The dashboard (nbtools.viz.dashboard) draws into four parts: a status line (HTML), a progress bar, the
figure (PNG bytes) and the findings (HTML). A view holds them:

- `WidgetView`: an ipywidgets panel (VBox of HTML, IntProgress, Image, HTML), one output shown with a
  display id; what ipywidgets 7 and 8 share.
- `OutputView`: plain outputs updated in place by display id, for a frontend where widgets do not
  render (nbclient / nbconvert / papermill runs, Colab with ipywidgets 8; see nbtools.viz.frontend):
  the figure as image/png, below it the status line and findings as text/html with a text/plain copy.
  There is no bar (the status line names the epoch and step), and the figure is replaced at the
  dashboard's throttled redraws only.

When training ends, however it ends, `leave()` turns the view into plain outputs: the widget panel's
output is replaced by the figure's last frame as image/png and the status line and findings follow
as text, so a saved notebook, a reconnected Colab tab or GitHub shows the run without a kernel. Later
messages (fit's "stopped: ...") update that text.
"""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

WAITING = "nbtools dashboard: the figure appears at the first log interval"
NOTHING_DRAWN = "nbtools dashboard: no log interval finished, so there is no figure"


def _show(bundle: dict):
    from IPython.display import display

    return display(bundle, raw=True, display_id=True)


def plain_text(markup: str) -> str:
    """Our own dashboard HTML as readable text (line breaks and list items kept)."""
    text = re.sub(r"<br\s*/?>|</li>|</div>|</p>|</ul>", "\n", markup)
    text = re.sub(r"<li[^>]*>", "\n- ", text)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def picture_bundle(png: bytes) -> dict:
    if not png:
        return {"text/plain": NOTHING_DRAWN}
    return {"image/png": bytes(png), "text/plain": "nbtools dashboard (the figure as PNG)"}


def text_bundle(status: str, findings: str) -> dict:
    markup = "<br>".join(p for p in (status, findings) if p)
    return {"text/html": markup, "text/plain": plain_text(markup)}


class _Field:
    """Stands in for an ipywidgets value widget (HTML, Image): assigning `.value` re-renders an output."""

    def __init__(self, render, value=""):
        self._value, self._render = value, render

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, v) -> None:
        self._value = v
        self._render()


class OutputView:
    """The dashboard's parts as two plain outputs: the figure (image/png) and its text below it."""

    def __init__(self, show: bool = True, picture=None):
        self.status = _Field(self._show_text)
        self.findings_box = _Field(self._show_text)
        self.image = _Field(self._show_picture, b"")
        self.bar = SimpleNamespace(value=0, max=1, description="", bar_style="")
        self._picture = picture if picture is not None else _show({"text/plain": WAITING}) if show else None
        self._text = _show(text_bundle("", "")) if show else None

    def _show_picture(self) -> None:
        if self._picture is not None:
            self._picture.update(picture_bundle(self.image.value), raw=True)

    def _show_text(self) -> None:
        if self._text is not None:
            self._text.update(text_bundle(self.status.value, self.findings_box.value), raw=True)

    def parts(self) -> tuple:
        return self.status, self.bar, self.image, self.findings_box

    def leave(self) -> OutputView:
        self._show_picture()
        self._show_text()
        return self


class WidgetView:
    """The ipywidgets panel; `.widget` is its VBox (CSS class nbtools-dashboard)."""

    def __init__(self, show: bool = True):
        import ipywidgets as widgets  # only when a dashboard is shown

        self.status = widgets.HTML()
        self.bar = widgets.IntProgress(value=0, min=0, max=1, description="", bar_style="info")
        self.image = widgets.Image(format="png")
        self.findings_box = widgets.HTML()
        self.widget = widgets.VBox([self.status, self.bar, self.image, self.findings_box])
        self.widget.add_class("nbtools-dashboard")  # a handle for the browser tests' selectors
        # The view's own bundle, shown with a display id so `leave` can replace it (ipywidgets 7's
        # _ipython_display_ would drop the id).
        bundle = {"text/plain": "nbtools dashboard (a live widget: a picture replaces it when training ends)"}
        bundle["application/vnd.jupyter.widget-view+json"] = self.widget.get_view_spec()
        self._shown = _show(bundle) if show else None

    def parts(self) -> tuple:
        return self.status, self.bar, self.image, self.findings_box

    def leave(self) -> OutputView:
        """Replace the panel by its last frame and its text, and close the widgets."""
        plain = OutputView(show=False, picture=self._shown)
        plain.status._value, plain.findings_box._value = self.status.value, self.findings_box.value
        plain.image._value = bytes(self.image.value)
        plain.bar.bar_style = self.bar.bar_style
        if self._shown is not None:
            plain._show_picture()
            plain._text = _show(text_bundle(plain.status.value, plain.findings_box.value))
        for w in (*self.widget.children, self.widget):
            w.close()
        return plain
