"""What the kernel can know about the frontend that shows its outputs: will ipywidgets render there?

The rule `fit(dashboard="auto")` follows (nbtools.viz.progress.make_progress):
- ipywidgets is not installed: no.
- The running cell came from a headless executor (nbclient, `jupyter nbconvert --execute`, papermill,
  nbval): these send execute requests with allow_stdin=False, while Jupyter, JupyterLab, Colab and VS
  Code allow `input()`. Nothing renders a widget there while it runs, and the notebook they save shows
  a widget as "Loading widget..." or an error unless its state was stored. No.
- Colab with ipywidgets 8: Colab's frontend renders ipywidgets 7 only, unless the cell ran
  `google.colab.output.enable_custom_widget_manager()` (colabtools #3020, #4525). No, unless enabled.
- Otherwise: yes.
What the kernel cannot know is where the notebook is opened later (GitHub, nbviewer, a reconnected
Colab tab, JupyterLab without the widget state): for those the dashboard leaves a plain PNG when
training ends, in either view (nbtools.viz.snapshot).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys


def _ipywidgets_major() -> int | None:
    if importlib.util.find_spec("ipywidgets") is None:
        return None
    try:
        return int(importlib.metadata.version("ipywidgets").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 7  # importable but unversioned (a source checkout): assume what Colab ships


def _kernel():
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None)


def headless() -> bool:
    """True when the running cell was sent by an executor that allows no input() (nbclient & co.)."""
    kernel = _kernel()
    # ipykernel keeps the running request's allow_stdin (6.x and 7.x); unknown means interactive
    return kernel is not None and getattr(kernel, "_allow_stdin", True) is False


def _colab_custom_widget_manager() -> bool:
    widgets = sys.modules.get("google.colab.output._widgets")
    return bool(getattr(widgets, "_installed_url", None))


def widgets_render() -> tuple[bool, str]:
    """(True, "") when ipywidgets will render live in this kernel's frontend, else (False, why)."""
    major = _ipywidgets_major()
    if major is None:
        return False, "ipywidgets is not installed"
    if headless():
        return False, "the notebook runs headless (nbclient, nbconvert --execute, papermill or nbval)"
    in_colab = "google.colab" in sys.modules
    if in_colab and major >= 8 and not _colab_custom_widget_manager():
        return False, (
            f"Colab renders ipywidgets 7 only and this kernel has ipywidgets {major} (run "
            f"google.colab.output.enable_custom_widget_manager() to render it)"
        )
    return True, ""
