"""Drive a real JupyterLab in Debian's headless Chromium: start the server, open a notebook, run all
cells through the menu, and read what the page shows (errors, widgets, images).

Every wait is for an event, bounded, and says what it waited for when it gives up. The bounds are caps,
not expected times: each holds at 10x and more what it takes on a quiet 2-core machine, since other work
on the machine (CI shares a developer's) stretches every step. The server and its kernels are always
stopped by `running_lab`, the browser by `chromium`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

try:
    from playwright.sync_api import Error as PlaywrightError
except ModuleNotFoundError as e:  # fail the browser tests with the reason, not the whole suite's collection
    PLAYWRIGHT_MISSING: str | None = f"playwright is not installed ({e}): pip install -r requirements-dev.txt"

    class PlaywrightError(Exception):
        pass
else:
    PLAYWRIGHT_MISSING = None

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("NBTOOLS_CHROMIUM", "/usr/bin/chromium")
# The closed network here refuses Chromium's background connections; these flags keep it from trying.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# JupyterLab user settings for the test server only: no news/update pop-up over the notebook, and every
# cell kept in the DOM (the default windowing may leave off-screen cells out, and we count cells).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

STDERR_MIME = "application/vnd.jupyter.stderr"
WIDGET_ERRORS = ("Error displaying widget", "model not found", "Loading widget...")


@dataclass
class Lab:
    """A running JupyterLab server on 127.0.0.1."""

    url: str
    token: str
    root: Path
    proc: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 80) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def api(self, path: str, method: str = "GET", timeout: float = 30.0):
        req = urllib.request.Request(f"{self.url}{path}", method=method)
        req.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def notebook_url(self, name: str) -> str:
        # One workspace per notebook, so a page never restores another test's tabs.
        workspace = quote(Path(name).stem)
        return f"{self.url}/lab/workspaces/{workspace}/tree/{quote(name)}?token={self.token}"

    def shutdown_kernels(self) -> None:
        for kernel in self.api("/api/kernels"):
            self.api(f"/api/kernels/{kernel['id']}", method="DELETE", timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(root: Path, work: Path, kernel_env: dict[str, str] | None = None, timeout: float = 300) -> Lab:
    """Start `python -m jupyterlab` serving `root`, with its config, settings and workspaces under `work`.

    Kernels inherit the server's environment: NBTOOLS_SMOKE=1, this checkout first on PYTHONPATH (so the
    notebooks import the nbtools under test, not whatever an editable install points at), plus
    `kernel_env`. Raises AssertionError with the server log if it does not answer within `timeout` s.
    """
    settings = work / "settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ)
    env.update(
        NBTOOLS_SMOKE="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        JUPYTER_CONFIG_DIR=str(work / "config"),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
        **(kernel_env or {}),
    )
    port, token = free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    log = work / "jupyterlab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    lab = Lab(url=f"http://127.0.0.1:{port}", token=token, root=root, proc=proc, log=log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(
                f"JupyterLab exited with code {proc.returncode} before answering on port {port}.\n"
                f"command: {' '.join(cmd)}\nlog ({log}):\n{lab.log_tail()}"
            )
        try:
            lab.api("/api/status", timeout=2)
            return lab
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            stop_lab(lab)
            raise AssertionError(
                f"JupyterLab did not answer on {lab.url}/api/status within {timeout:.0f} s.\n"
                f"log ({log}):\n{lab.log_tail()}"
            )
        time.sleep(0.25)  # polling the server, not waiting for the page


def _kernel_children(pid: int) -> list[int]:
    """PIDs of the kernels the server `pid` started (jupyter_client starts each in a new session, so
    signalling the server's process group would miss them)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"ipykernel" in cmdline:
            kids.append(int(stat.parent.name))
    return kids


def stop_lab(lab: Lab, timeout: float = 20) -> None:
    """Shut the server down (kernels included) through its API; terminate, then kill, if it lingers."""
    kernels = _kernel_children(lab.proc.pid)
    if lab.proc.poll() is None:
        with contextlib.suppress(OSError):
            lab.api("/api/shutdown", method="POST")
        try:
            lab.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            lab.proc.terminate()
            try:
                lab.proc.wait(10)
            except subprocess.TimeoutExpired:
                lab.proc.kill()
                lab.proc.wait()
    for pid in kernels:  # normally gone with the server; kill one that outlived it (if still a kernel)
        with contextlib.suppress(OSError):
            if b"ipykernel" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_lab(root: Path, work: Path, **kwargs) -> Iterator[Lab]:
    lab = start_lab(root, work, **kwargs)
    try:
        yield lab
    finally:
        stop_lab(lab)


@contextlib.contextmanager
def chromium(playwright: Playwright, user_data_dir: Path) -> Iterator[BrowserContext]:
    """Debian's Chromium (never a downloaded browser) with a fresh profile. AssertionError if it is
    missing or does not start: a browser test that cannot see a browser must fail, not skip."""
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} not found: install Debian's chromium with .ci/install-browser")
    try:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
            timeout=60_000,
        )
    except PlaywrightError as e:
        raise AssertionError(f"{CHROMIUM} failed to start: {e}") from e
    try:
        yield context
    finally:
        context.close()


# --- the notebook page ---------------------------------------------------------------------------------

# The notebook panel on show (one per page: each notebook opens in its own workspace).
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"

# Kernel state read from the notebook toolbar: its kernel name and the execution indicator's status.
_KERNEL_JS = f"""() => {{
  const panel = document.querySelector('{PANEL}');
  if (!panel) return {{name: null, status: null}};
  return {{
    name: panel.querySelector('.jp-Toolbar-kernelName')?.textContent.trim() ?? null,
    status: panel.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status ?? null,
  }};
}}"""

# Prompt of every code cell with source ("[ ]:", "[*]:", "[3]:"); empty cells are never executed.
_PROMPTS_JS = f"""() => Array.from(document.querySelectorAll('{PANEL} .jp-CodeCell'))
  .filter(c => (c.querySelector('.cm-content')?.textContent ?? '').trim() !== '')
  .map(c => c.querySelector('.jp-InputArea-prompt')?.textContent.trim() ?? '')"""


def kernel_state(page: Page) -> dict:
    return page.evaluate(_KERNEL_JS)


def prompts(page: Page) -> list[str]:
    return page.evaluate(_PROMPTS_JS)


def open_notebook(page: Page, lab: Lab, name: str, timeout: float = 300) -> None:
    """Open `name` (relative to the server root) in `page` and wait until its kernel is idle."""
    page.goto(lab.notebook_url(name), timeout=timeout * 1000)
    try:
        page.locator(f"{PANEL} .jp-Notebook").wait_for(timeout=timeout * 1000)
    except PlaywrightError as e:
        raise AssertionError(f"{name}: no notebook panel after {timeout:.0f} s ({e})") from e
    # A notebook without kernelspec metadata asks which kernel to start.
    ready = f"""() => {{
      const k = ({_KERNEL_JS})();
      const dialog = Array.from(document.querySelectorAll('.jp-Dialog')).some(d => d.textContent.includes('Select Kernel'));
      return dialog || (k.name && k.name !== 'No Kernel' && k.status === 'idle');
    }}"""
    wait_js(page, ready, timeout, f"{name}: kernel idle or kernel dialog")
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    if dialog.count():
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()  # "Select", the kernel it proposes
    wait_idle(page, timeout, what=f"{name}: kernel started")


def wait_idle(page: Page, timeout: float = 300, what: str = "kernel idle") -> None:
    """Wait until the notebook's kernel is started and idle."""
    idle = f"() => {{ const k = ({_KERNEL_JS})(); return !!k.name && k.name !== 'No Kernel' && k.status === 'idle'; }}"
    wait_js(page, idle, timeout, what)


def run_all(page: Page) -> None:
    """Run > Run All Cells, clicked in the menu bar as a user does, and wait until the run has started."""
    before = prompts(page)
    page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
    page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").click()
    started = f"() => ({_PROMPTS_JS})().some((p, i) => p !== {json.dumps(before)}[i])"
    wait_js(page, started, 60, "Run All Cells to start (a prompt to change)")


def wait_executed(page: Page, timeout: float = 300) -> list[str]:
    """Wait until every code cell ran ("[n]:") and the kernel is idle, or a cell failed and the run
    stopped there (JupyterLab aborts the cells queued after an error). Returns the prompts."""
    done = f"""() => {{
      const p = ({_PROMPTS_JS})(), k = ({_KERNEL_JS})();
      if (k.status !== 'idle' || p.some(x => x.includes('*'))) return false;
      const failed = document.querySelector('{PANEL} .jp-OutputArea-output[data-mime-type="{STDERR_MIME}"]');
      return p.every(x => /^\\[\\d+\\]:$/.test(x)) || !!failed;
    }}"""
    wait_js(page, done, timeout, "all cells executed and kernel idle")
    return prompts(page)


def wait_for_image(page: Page, selector: str, timeout: float) -> None:
    """Wait until the `selector` <img> shows a picture. Gives up early, with the error outputs, if the run
    is over (no cell queued or running, kernel idle) without one."""
    shown_or_over = f"""(selector) => {{
      const img = document.querySelector('{PANEL} ' + selector);
      if (img && img.src && img.naturalWidth > 0) return true;
      return ({_KERNEL_JS})().status === 'idle' && !({_PROMPTS_JS})().some(p => p.includes('*'));
    }}"""
    wait_js(page, shown_or_over, timeout, f"an image at {selector}", arg=selector)
    if not image_digest(page, selector)["bytes"]:
        raise AssertionError(
            f"the run ended without an image at {selector}; prompts {prompts(page)}, "
            f"errors {errors_in_page(page)}"
        )


def errors_in_page(page: Page) -> list[str]:
    """Text of every error output in the notebook: tracebacks and stderr that names an error."""
    return page.evaluate(
        f"""() => Array.from(document.querySelectorAll('{PANEL} .jp-OutputArea-output[data-mime-type="{STDERR_MIME}"]'))
          .map(e => e.textContent)
          .filter(t => /Traceback|Error/.test(t))"""
    )


def widget_state(page: Page) -> dict:
    """What the notebook's widget outputs show: how many widget views and images rendered, and any
    widget error or placeholder text ("Loading widget...", "Error displaying widget: model not found")."""
    return page.evaluate(
        f"""(problems) => {{
          const panel = document.querySelector('{PANEL}');
          if (!panel) return {{views: 0, images: 0, sliders: 0, problems: ['no notebook panel']}};
          const text = Array.from(panel.querySelectorAll('.jp-OutputArea-output')).map(e => e.innerText).join('\\n');
          return {{
            views: panel.querySelectorAll('.jupyter-widgets').length,
            images: panel.querySelectorAll('img.widget-image').length,
            sliders: panel.querySelectorAll('.widget-slider').length,
            problems: problems.filter(p => text.includes(p)),
          }};
        }}""",
        list(WIDGET_ERRORS),
    )


def wait_widgets_rendered(page: Page, timeout: float = 60) -> dict:
    """Wait until at least one widget view is on the page and no "Loading widget..." placeholder is
    left (an error placeholder ends the wait too, for the caller to report). Returns `widget_state`."""
    rendered = f"""() => {{
      const panel = document.querySelector('{PANEL}');
      const text = panel ? panel.innerText : '';
      return text.includes('Error displaying widget')
        || (!!panel && panel.querySelector('.jupyter-widgets') !== null && !text.includes('Loading widget...'));
    }}"""
    wait_js(page, rendered, timeout, "widgets rendered")
    return widget_state(page)


def wait_settled(page: Page, selector: str, quiet_s: float = 1.0, timeout: float = 60) -> None:
    """Wait until the kernel is idle and the `selector` <img> has kept its src for `quiet_s` seconds: the
    kernel has answered every widget message (idle alone can be a gap between two of them)."""
    settled = f"""([selector, quietMs]) => {{
      const src = document.querySelector('{PANEL} ' + selector)?.src ?? null;
      const idle = ({_KERNEL_JS})().status === 'idle';
      const now = performance.now(), last = window.__nbtSettle;
      if (!idle || !last || last.src !== src) {{
        window.__nbtSettle = {{src, since: now}};
        return false;
      }}
      return now - last.since >= quietMs;
    }}"""
    try:
        page.wait_for_function(settled, arg=[selector, quiet_s * 1000], timeout=timeout * 1000, polling=100)
    except PlaywrightError as e:
        raise AssertionError(
            f"{selector} did not settle (kernel idle, image unchanged for {quiet_s} s) within {timeout:.0f} s; "
            f"kernel {kernel_state(page)}"
        ) from e


def scroll_to_cell(page: Page, selector: str) -> None:
    """Scroll the notebook so that the bottom of the code cell holding `selector` meets the bottom of the
    view: its whole output shows, with its prompt ("[*]:" while it runs) and code above if they fit."""
    page.evaluate(
        "(s) => document.querySelector(s)?.closest('.jp-CodeCell')?.scrollIntoView({block: 'end'})",
        f"{PANEL} {selector}",
    )


def image_digest(page: Page, selector: str) -> dict:
    """src and SHA-256 of the bytes behind the first `selector` <img> in the notebook (ipywidgets.Image
    shows its value through a blob: URL), so a change means new pixels, not just a new URL.

    A redraw revokes the old blob: URL, so a read that overlaps one fails: it is read again from the new
    src (a failure on a src that did not change is raised)."""
    return page.evaluate(
        f"""async (selector) => {{
          for (let attempt = 0; ; attempt++) {{
            const img = document.querySelector('{PANEL} ' + selector);
            if (!img || !img.src) return {{src: null, sha256: null, bytes: 0}};
            const src = img.src;
            let data;
            try {{
              data = await (await fetch(src)).arrayBuffer();
            }} catch (e) {{
              const now = document.querySelector('{PANEL} ' + selector)?.src;
              if (now !== src && attempt < 20) continue;  // redrawn while read: read the new one
              throw e;
            }}
            const hash = await crypto.subtle.digest('SHA-256', data);
            const hex = Array.from(new Uint8Array(hash)).map(b => b.toString(16).padStart(2, '0')).join('');
            return {{src, sha256: hex, bytes: data.byteLength}};
          }}
        }}""",
        selector,
    )


def wait_js(page: Page, js: str, timeout: float, what: str, arg=None) -> None:
    """Wait until the page function `js` (called with `arg`) returns true; AssertionError naming `what`,
    the kernel state, the prompts and any error output if it does not within `timeout` s."""
    try:
        page.wait_for_function(js, arg=arg, timeout=timeout * 1000, polling=200)
    except PlaywrightError as e:
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what}; kernel {kernel_state(page)}, "
            f"prompts {prompts(page)}, errors {errors_in_page(page)}"
        ) from e
