"""Fixtures for the browser tests: one JupyterLab server and one Chromium per module, a page per test
(closed, with its kernel shut down, after the test; screenshotted first if the test failed)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import lab
import pytest

ARTIFACTS = Path(os.environ.get("NBTOOLS_ARTIFACTS") or Path(__file__).parent / "artifacts")
_SAVED: list[Path] = []  # files written to ARTIFACTS this session, listed at the end of the run
# .ci/run sets it: in CI a missing Chromium fails the browser tests instead of skipping them
REQUIRE_BROWSER = os.environ.get("NBTOOLS_REQUIRE_BROWSER") == "1"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter):
    if _SAVED:
        terminalreporter.section("browser artifacts")
        for path in _SAVED:
            terminalreporter.write_line(str(path))


def save_artifact(name: str) -> Path:
    """Path for an artifact in ARTIFACTS (created), recorded to be listed at the end of the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    _SAVED.append(path)
    return path


@pytest.fixture(autouse=True)
def chromium_installed():
    """Skip, with the reason on one line, where Chromium is not installed (the README's test command runs
    .ci/install-browser first, which needs apt-get as root); with NBTOOLS_REQUIRE_BROWSER=1 the test runs
    and fails, naming the missing browser."""
    if not REQUIRE_BROWSER and not Path(lab.CHROMIUM).exists():
        pytest.skip(
            f"{lab.CHROMIUM} not found and bash .ci/install-browser could not install it here "
            f"(apt-get as root); CI sets NBTOOLS_REQUIRE_BROWSER=1 and fails instead"
        )


@pytest.fixture
def artifact():
    """`artifact(name)`: a path in ARTIFACTS to write to, listed at the end of the run."""
    return save_artifact


class Frontend:
    """One JupyterLab server and one Chromium per test module. Each starts on first use, inside a test, so a
    missing browser or a server that does not come up FAILS that test with the reason (and the next test
    at once, without a second wait); both stop when the module ends."""

    def __init__(self, work: Path):
        self.work = work
        self._stack = contextlib.ExitStack()
        self._lab: lab.Lab | None = None
        self._browser = None
        self._failed: str | None = None

    def _start(self, what: str, start):
        if self._failed:
            pytest.fail(f"not retried: {self._failed}")
        try:
            return start()
        except AssertionError as e:
            self._failed = f"{what}: {e}"
            raise

    def lab(self) -> lab.Lab:
        if self._lab is None:
            root = self.work / "root"
            root.mkdir(exist_ok=True)
            self._lab = self._start(
                "JupyterLab", lambda: self._stack.enter_context(lab.running_lab(root, self.work))
            )
        return self._lab

    def browser(self):
        if self._browser is None:
            self._browser = self._start("Chromium", self._launch)
        return self._browser

    def _launch(self):
        if lab.PLAYWRIGHT_MISSING:
            raise AssertionError(lab.PLAYWRIGHT_MISSING)
        from playwright.sync_api import sync_playwright

        playwright = self._stack.enter_context(sync_playwright())
        return self._stack.enter_context(lab.chromium(playwright, self.work / "profile"))

    def close(self) -> None:
        self._stack.close()
        if self._lab is not None:
            shutil.copy(self._lab.log, save_artifact("jupyterlab.log"))


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    fe = Frontend(tmp_path_factory.mktemp("frontend"))
    try:
        yield fe
    finally:
        fe.close()


def inject_parameters(path: Path, parameters: dict) -> None:
    """Append `NAME = value` lines to the cell tagged `parameters` (papermill's convention), so a test can
    run a notebook longer or smaller than its smoke defaults without a second copy of it."""
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged parameters, found {len(cells)}"
    source = "".join(cells[0]["source"]).rstrip("\n")
    lines = [f"{name} = {value!r}  # injected by the browser test" for name, value in parameters.items()]
    cells[0]["source"] = "\n".join([source, *lines])
    path.write_text(json.dumps(nb))


@pytest.fixture
def notebook_page(request, frontend):
    """`open(path, parameters=None)` copies the notebook into the server's root (with `parameters`
    injected), opens it and waits for an idle kernel."""
    pages = []

    def open_(path: Path, parameters: dict | None = None):
        assert path.is_file(), f"notebook not found: {path}"
        browser, server = frontend.browser(), frontend.lab()
        shutil.copy(path, server.root / path.name)
        if parameters:
            inject_parameters(server.root / path.name, parameters)
        page = browser.new_page()
        pages.append((path.stem, page))
        lab.open_notebook(page, server, path.name)
        return page

    yield open_
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for stem, page in pages:
        with contextlib.suppress(lab.PlaywrightError):  # a crashed page must not hide the test's own failure
            if failed:
                page.screenshot(path=save_artifact(f"{stem}-failure.png"))
            page.close()
    if pages:
        frontend.lab().shutdown_kernels()
