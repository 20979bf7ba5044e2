"""The notebooks as a user sees them: JupyterLab in Debian's headless Chromium, Run > Run All Cells, then
what the page shows — no error output, widgets rendered, a dashboard figure that refreshes while the
training cell runs and is left as a plain image when it ends, a slice viewer whose image follows its
slider. Screenshots go to ARTIFACTS.

    .ci/install-browser && python -m pytest -q -m browser
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import lab
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # JupyterLab and Chromium: over a minute in all

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Dashboard:
    notebook: Path
    image: str  # CSS selector, inside the notebook, of the <img> that must refresh while its cell runs
    gap_s: float  # seconds between the two samples of that image
    texts: tuple[str, ...]  # text the notebook's outputs show once it has run
    timeout_s: float  # the whole run
    parameters: dict | None = None  # injected into the notebook's `parameters` cell
    left: str = ".jp-RenderedImage img"  # the plain image/png that replaces the panel when training ends


@dataclass(frozen=True)
class SliceViewer:
    notebook: Path
    slider: str  # CSS selector of the ipywidgets slider (its first match) to move
    image: str  # CSS selector of the <img> the slider drives
    steps: int  # ArrowRight presses on the slider handle
    texts: tuple[str, ...]
    timeout_s: float
    parameters: dict | None = None


# ======================================================================================================
# The notebooks and what to check in them. 02 runs at smoke sizes but 20 epochs: the dashboard redraws at
# every epoch end, so its cell runs well past gap_s after the first frame.
REAL_DASHBOARD = Dashboard(
    notebook=REPO / "notebooks" / "02_train_resnet3d.ipynb",
    image=".nbtools-dashboard img.widget-image",  # the dashboard's figure, an ipywidgets.Image
    gap_s=3.0,
    texts=("20/20 epochs",),  # print(run) after fit
    timeout_s=600,
    parameters={"EPOCHS": 20},
)
REAL_SLICE_VIEWER = SliceViewer(
    notebook=REPO / "notebooks" / "01_data.ipynb",
    slider=".nbtools-slice-viewer .widget-slider",  # the first: the sample slider (16 volumes in smoke mode)
    image=".nbtools-slice-viewer img.widget-image",
    steps=3,
    texts=("fold 0:",),  # the last cell's print
    timeout_s=300,
)

# ======================================================================================================
DASHBOARDS = [REAL_DASHBOARD]
SLICE_VIEWERS = [REAL_SLICE_VIEWER]


def assert_no_errors(page, name: str) -> None:
    errors = lab.errors_in_page(page)
    assert not errors, f"{name}: {len(errors)} error output(s) in the page:\n" + "\n---\n".join(errors)


def assert_widgets_rendered(page, name: str, timeout: float = 30) -> None:
    try:
        state = lab.wait_widgets_rendered(page, timeout)
    except AssertionError:
        state = lab.widget_state(page)
    assert state["views"] > 0 and not state["problems"], f"{name}: widgets did not render: {state}"


def assert_texts(page, name: str, texts: tuple[str, ...]) -> None:
    shown = page.locator(f"{lab.PANEL} .jp-OutputArea").all_inner_texts()
    missing = [t for t in texts if not any(t in s for s in shown)]
    assert not missing, f"{name}: outputs do not show {missing}"


def sample(page, selector: str) -> dict:
    """The image's digest, and whether the cell that displays it is still running ("[*]")."""
    running = page.evaluate(
        f"""(selector) => {{
          const img = document.querySelector('{lab.PANEL} ' + selector);
          const prompt = img?.closest('.jp-CodeCell')?.querySelector('.jp-InputArea-prompt');
          return !!prompt && prompt.textContent.includes('*');
        }}""",
        selector,
    )
    return {**lab.image_digest(page, selector), "cell_running": running, "t": time.monotonic()}


@pytest.mark.parametrize("nb", DASHBOARDS, ids=lambda nb: nb.notebook.stem)
def test_dashboard_refreshes_while_training(notebook_page, artifact, nb: Dashboard):
    name = nb.notebook.name
    page = notebook_page(nb.notebook, nb.parameters)
    start = time.monotonic()
    lab.run_all(page)
    # The figure appears once the training cell has displayed the dashboard and drawn a first frame.
    lab.wait_for_image(page, nb.image, nb.timeout_s)
    first = sample(page, nb.image)
    time.sleep(nb.gap_s)  # the one deliberate pause: let the running cell redraw the figure
    second = sample(page, nb.image)
    lab.scroll_to_cell(page, nb.image)
    shot = artifact(f"{nb.notebook.stem}-running.png")
    page.screenshot(path=shot)
    print(f"screenshot of the running dashboard: {shot}")

    assert first["cell_running"] and second["cell_running"], (
        f"{name}: the dashboard's cell finished within {second['t'] - first['t']:.1f} s of the first "
        f"frame, so a refresh while it runs could not be observed: {first}, {second}"
    )
    assert first["sha256"] != second["sha256"], (
        f"{name}: the dashboard figure did not change in {nb.gap_s} s while its cell ran: {first}, {second}"
    )
    lab.wait_executed(page, max(nb.timeout_s - (time.monotonic() - start), 30))
    assert_no_errors(page, name)
    # Training is over: the live panel gave way to its last frame as a plain image/png, which a saved
    # notebook, a reconnected tab or GitHub shows without a kernel or widget state.
    left = lab.image_digest(page, nb.left)
    state = lab.widget_state(page)
    dashboards = page.locator(f"{lab.PANEL} .nbtools-dashboard").count()
    assert left["bytes"] > 10_000 and dashboards == 0 and not state["problems"], (
        f"{name}: after training, expected the dashboard as a plain image at {nb.left} and no live panel: "
        f"image {left}, {dashboards} panels, widgets {state}"
    )
    lab.scroll_to_cell(page, nb.left)
    page.screenshot(path=artifact(f"{nb.notebook.stem}-after.png"))
    assert_texts(page, name, nb.texts)


@pytest.mark.parametrize("nb", SLICE_VIEWERS, ids=lambda nb: nb.notebook.stem)
def test_slice_viewer_follows_its_slider(notebook_page, artifact, nb: SliceViewer):
    name = nb.notebook.name
    page = notebook_page(nb.notebook, nb.parameters)
    lab.run_all(page)
    lab.wait_executed(page, nb.timeout_s)
    assert_no_errors(page, name)
    assert_widgets_rendered(page, name)
    assert_texts(page, name, nb.texts)

    handle = page.locator(f"{lab.PANEL} {nb.slider} .noUi-handle").first
    readout = page.locator(f"{lab.PANEL} {nb.slider} .widget-readout").first
    assert handle.count() and readout.count(), f"{name}: no slider handle and readout in {nb.slider}"
    before = lab.image_digest(page, nb.image)
    value = int(handle.get_attribute("aria-valuenow").split(".")[0])
    assert before["bytes"] > 0, f"{name}: the slice viewer shows no image: {before}"
    handle.focus()
    for _ in range(nb.steps):
        page.keyboard.press("ArrowRight")
    expected = str(value + nb.steps)
    lab.wait_js(
        page,
        """([handle, readout, expected]) => handle.getAttribute('aria-valuenow').split('.')[0] === expected
             && readout.textContent.trim() === expected""",
        10,
        f"{name}: slider at {expected} after {nb.steps} x ArrowRight from {value}",
        arg=[handle.element_handle(), readout.element_handle(), expected],
    )
    # The kernel redraws for each value it is sent (ipywidgets may coalesce quick moves); the image shows
    # the last one once the kernel is idle and the image has stopped changing.
    lab.wait_settled(page, nb.image)
    after = lab.image_digest(page, nb.image)
    lab.scroll_to_cell(page, nb.slider)
    shot = artifact(f"{nb.notebook.stem}-slider.png")
    page.screenshot(path=shot)
    print(f"screenshot of the slice viewer: {shot}")
    assert after["sha256"] != before["sha256"], (
        f"{name}: slider moved {value} -> {expected} but the image bytes did not change: {before}, {after}"
    )
    assert_no_errors(page, name)


def test_page_checks_catch_a_broken_notebook(notebook_page):
    """The checks above can fail: a traceback, a widget without a model and a missing figure are reported."""
    name = "selftest_broken.ipynb"
    page = notebook_page(FIXTURES / name)
    lab.run_all(page)
    with pytest.raises(AssertionError, match="the run ended without an image"):
        lab.wait_for_image(page, "img.widget-image", 60)  # and it does not wait out the 60 s
    lab.wait_executed(page, 60)
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        assert_no_errors(page, name)
    with pytest.raises(AssertionError, match="widgets did not render"):
        assert_widgets_rendered(page, name, timeout=5)
    # Which placeholder shows depends on timing: "Loading widget...", later "Error displaying widget".
    assert lab.widget_state(page)["problems"], "the widget with no model was not reported"
