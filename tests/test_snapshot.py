"""The dashboard leaves a plain picture: notebooks run in a real kernel (nbclient), saved, and read back
as a reconnect or GitHub would show them: an image/png of the dashboard and the findings as text, also
when fit raises; plus the view rules that decide between widgets and plain outputs."""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from nbtools.viz import frontend, snapshot
from nbtools.viz.dashboard import Dashboard
from tests.test_viz import drive

REPO = Path(__file__).resolve().parents[1]

SETUP = f"""import sys
sys.path.insert(0, {str(REPO)!r})
import torch
from torch import nn
import nbtools as nbt
from tests.helpers import NoisyBlobs, small_cnn


class NaNAt(NoisyBlobs):  # sample 3 is NaN: its batch's step is skipped and reported each epoch
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return (torch.full_like(x, float("nan")) if i in self.bad else x), y


cfg = nbt.TrainConfig(epochs=2, batch_size=8, log_every=2, checkpoint_every_minutes=None)"""
FINISHES = """# a run that finishes, with a finding
data = NaNAt()
data.bad = {3}
run = nbt.fit(small_cnn(), data, NoisyBlobs(seed=1), nn.CrossEntropyLoss(), cfg, "runs/finishes")"""
RAISES = """# a run that raises NonFiniteError out of the cell
data = NaNAt()
data.bad = set(range(48))
nbt.fit(small_cnn(), data, NoisyBlobs(seed=1), nn.CrossEntropyLoss(), cfg.replace(max_bad_steps=2), "runs/raises")"""

CRASHES = """# a run that an exception cuts short inside the loop (as a CUDA out-of-memory would)
def out_of_memory_at_batch_5(x, y, seen=[]):
    seen.append(1)
    if len(seen) == 5:
        raise RuntimeError("CUDA out of memory (planted)")
    return x, y

nbt.fit(small_cnn(), NoisyBlobs(), NoisyBlobs(seed=1), nn.CrossEntropyLoss(), cfg, "runs/crashes",
        batch_transform=out_of_memory_at_batch_5)"""


def _run_and_save(nb, tmp_path: Path, name: str) -> nbformat.NotebookNode:
    """Execute in a fresh kernel (cwd tmp_path), write the .ipynb, and read back what was saved."""
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    path = tmp_path / name
    nbformat.write(nb, path)
    return nbformat.read(path, as_version=4)


def _pngs(cell) -> list[str]:
    return [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]


def _texts(cell) -> str:
    return "\n".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in cell.outputs)


@pytest.mark.slow
def test_a_saved_notebook_shows_the_dashboard_of_a_finished_a_failed_and_a_crashed_run(tmp_path):
    cells = [nbformat.v4.new_code_cell(c) for c in (SETUP, FINISHES, RAISES, CRASHES)]
    saved = _run_and_save(nbformat.v4.new_notebook(cells=cells), tmp_path, "tiny.ipynb")
    setup, finished, failed, crashed = saved.cells
    assert not [o for o in setup.outputs if o.output_type == "error"], _texts(setup)
    for cell in (finished, failed):
        (png,) = _pngs(cell)  # one picture: the last frame, left in place of the live one
        assert len(png) > 10_000 and not any(
            "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cell.outputs
        )
        assert "[nonfinite-loss]" in _texts(cell), _texts(cell)  # the findings, as text
    assert "epoch 2/2" in _texts(finished) and not [o for o in finished.outputs if o.output_type == "error"]
    (error,) = [o for o in failed.outputs if o.output_type == "error"]
    assert error.ename == "NonFiniteError"
    assert "stopped: non-finite loss or gradients" in _texts(failed)  # said after the picture was left
    (png,) = _pngs(crashed)  # the exception went through fit's `finally`: the frame of steps 2 and 4
    assert len(png) > 10_000 and "step 4" in _texts(crashed)
    assert [o.ename for o in crashed.outputs if o.output_type == "error"] == ["RuntimeError"]


@pytest.mark.slow
def test_the_saved_02_notebook_shows_a_png_of_the_dashboard(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("NBTOOLS_SMOKE", "1")
    nb = nbformat.read(REPO / "notebooks" / "02_train_resnet3d.ipynb", as_version=4)
    saved = _run_and_save(nb, tmp_path, "02_train_resnet3d.ipynb")
    errors = [o for c in saved.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[0]["evalue"] if errors else ""
    (train,) = [c for c in saved.cells if c.cell_type == "code" and "job.fit(" in c.source]
    assert len(_pngs(train)) == 1 and "epoch 2/2" in _texts(train)
    assert list((tmp_path / "runs" / "resnet3d").glob("events.out.tfevents.*"))  # and TensorBoard's scalars


def test_the_widget_view_leaves_its_last_frame_and_text(tmp_path):
    board = Dashboard(epochs=3, display=False)
    metrics = {
        "history": [{"epoch": 1, "step": 2, "train_loss": 0.7, "val_loss": 0.6, "val_auc": 0.8, "lr": {}}],
        "steps": [
            {"epoch": 1, "step": 2, "steps": 2, "loss": 0.7, "loss_last": 0.7, "grad_norm": 1.0,
             "grad_norm_max": 1.2, "group_grad_norm": {"default": 1.0}, "lr": {"default": 1e-3}, "scale": None,
             "skipped": 0, "skipped_steps": [], "nonfinite_loss": 0, "drift": 0.1, "param_norm": 3.0,
             "seconds": 0.1}
        ],
    }  # fmt: skip
    drive(board, metrics)  # ends with close(): the view is now plain
    assert isinstance(board.view, snapshot.OutputView) and bytes(board.image.value).startswith(b"\x89PNG")
    board.message("stopped: later")  # a message after close still lands in the text
    assert "stopped: later" in snapshot.plain_text(board.status.value)
    assert "[frozen-weights]" in snapshot.plain_text(board.findings_box.value)


def test_plain_text_keeps_lines_and_list_items():
    markup = (
        "<b>epoch 1/3</b> &middot; loss 0.5<br><small>resumed</small><ul><li><b>[x]</b> y</li><li>z</li></ul>"
    )
    assert snapshot.plain_text(markup) == "epoch 1/3 · loss 0.5\nresumed\n- [x] y\n- z"


@pytest.fixture
def kernel(monkeypatch):
    """A stand-in kernel: `kernel(allow_stdin)`; and a Colab of ipywidgets `major` with `colab(major, ...)`."""

    class Shell:
        pass

    shell = Shell()
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)

    def set_kernel(allow_stdin: bool):
        shell.kernel = type("Kernel", (), {"_allow_stdin": allow_stdin})()

    return set_kernel


def test_headless_runs_and_colab_with_ipywidgets_8_get_the_image_view(kernel, monkeypatch):
    kernel(allow_stdin=True)  # Jupyter, JupyterLab, Colab, VS Code
    assert frontend.widgets_render() == (True, "")
    kernel(allow_stdin=False)  # nbclient, nbconvert --execute, papermill, nbval
    assert frontend.widgets_render()[0] is False and "headless" in frontend.widgets_render()[1]
    kernel(allow_stdin=True)
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    monkeypatch.setattr(frontend, "_ipywidgets_major", lambda: 8)
    render, why = frontend.widgets_render()
    assert not render and "enable_custom_widget_manager()" in why
    widgets = type(sys)("google.colab.output._widgets")
    widgets._installed_url = "https://example.invalid/manager.min.js"
    monkeypatch.setitem(sys.modules, "google.colab.output._widgets", widgets)
    assert frontend.widgets_render() == (True, "")
    monkeypatch.setattr(frontend, "_ipywidgets_major", lambda: 7)  # what Colab ships
    del widgets._installed_url
    assert frontend.widgets_render() == (True, "")
