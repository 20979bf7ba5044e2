"""Report figures, the per-layer heatmap, and the dashboard: text outside a notebook, widgets or images inside."""

import copy
import json
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from torch import nn

import nbtools as nbt
from nbtools.runs import Finding
from nbtools.viz.dashboard import Dashboard
from nbtools.viz.progress import TextProgress, make_progress
from tests.helpers import NoisyBlobs, assert_same, small_cnn, tiny_fit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished 3-epoch run with two log intervals per epoch."""
    d = tmp_path_factory.mktemp("run")
    cfg = nbt.TrainConfig(epochs=3, batch_size=8, lr=3e-2, log_every=3, checkpoint_every_minutes=None)
    tiny_fit(cfg, d)
    return d


def test_report_writes_and_returns_the_figures(run_dir):
    rep = nbt.viz.report(run_dir)
    names = ["loss_curve", "learning_curves", "grad_norms", "confusion_matrix", "roc_curve", "pr_curve"]
    assert list(rep.figures) == names
    for name in names:
        assert rep.paths[name] == run_dir / f"{name}.png" and rep.paths[name].stat().st_size > 1000
    html = rep._repr_html_()
    assert html.count("data:image/png;base64,") == 6
    # the confusion matrix is the best epoch's: its counts are the validation set's
    cm_text = [t.get_text() for t in rep.figures["confusion_matrix"].axes[0].texts]
    assert sum(int(t) for t in cm_text) == len(NoisyBlobs(seed=1))
    assert "best epoch" in rep.figures["roc_curve"].axes[0].get_title()
    assert list(nbt.viz.report(nbt.runs.Run.load(run_dir), save=False).paths) == []


def test_grad_heatmap_rows_per_layer_and_the_model_untouched():
    model = small_cnn()
    model[0].requires_grad_(False)  # a frozen first layer: its row has no gradient at all
    before = copy.deepcopy((model.state_dict(), torch.get_rng_state()))
    hm = nbt.viz.grad_heatmap(model, NoisyBlobs(), nn.CrossEntropyLoss(), steps=5)
    assert hm.layers == ["0", "1", "5"] and hm.norms.shape == (3, 5) and len(hm.losses) == 5
    assert torch.isnan(torch.from_numpy(hm.norms[0])).all() and (hm.norms[1:] > 0).all()
    assert_same(before, (model.state_dict(), torch.get_rng_state()))
    assert hm._repr_png_().startswith(b"\x89PNG")


def test_text_fallback_outside_a_notebook(tmp_path, capsys):
    assert type(make_progress("auto", 3)) is TextProgress and make_progress("auto", 3).enabled
    assert not make_progress("off", 3).enabled and not make_progress(None, 3).enabled
    assert not make_progress("auto", 3, enabled=False).enabled
    assert type(make_progress("widgets", 3)) is TextProgress  # no kernel here: warned, text instead
    with pytest.raises(ValueError, match=r"dashboard must be one of.*got 'tqdm'"):
        make_progress("tqdm", 3)
    cfg = nbt.TrainConfig(epochs=1, batch_size=8, checkpoint_every_minutes=None)
    tiny_fit(cfg, tmp_path, val=NoisyBlobs(seed=1), verbose=True)
    assert "epoch 1/1  train_loss" in capsys.readouterr().out
    tiny_fit(cfg, tmp_path / "b", val=NoisyBlobs(seed=1), dashboard="off", verbose=True)
    assert capsys.readouterr().out == ""


def drive(board, metrics: dict) -> None:
    """Replay a recorded run through the progress interface, as fit calls it."""
    for h in metrics["history"]:
        records = [r for r in metrics["steps"] if r["epoch"] == h["epoch"]]
        board.start_epoch(h["epoch"], sum(r["steps"] for r in records), 0)
        for r in records:
            board.batches_done(r["steps"])
            board.interval(r)
        board.end_epoch(h)
    board.finding(Finding("frozen-weights", "weights moved 0 over steps 1-6", "check the optimizer", epoch=1))
    board.message("stopped: a message")
    board.close()


@pytest.mark.slow
def test_dashboard_throttles_redraws_but_draws_every_epoch(run_dir, monkeypatch):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    board = Dashboard(epochs=3, min_redraw_seconds=3600, display=False)
    drive(board, metrics)
    assert board.redraws == 4  # the first of six intervals (none after it within the hour), three epoch ends
    assert bytes(board.image.value).startswith(b"\x89PNG") and "[frozen-weights]" in board.findings_box.value
    first_epoch = {"history": metrics["history"][:1], "steps": metrics["steps"][:2]}
    monkeypatch.setattr("nbtools.viz.dashboard.DRAW_BUDGET", 0)  # no wait proportional to the draw time
    eager = Dashboard(epochs=3, min_redraw_seconds=0, display=False)
    drive(eager, first_epoch)
    assert eager.redraws == 3  # at both intervals and the epoch end


NOTEBOOK_CELLS = [
    "import sys\nsys.path.insert(0, {repo!r})\nimport json, nbtools as nbt\n"
    "from nbtools.viz.dashboard import Dashboard\n"
    "from nbtools.viz.progress import in_notebook, make_progress\n"
    "from tests.test_viz import drive\n"
    "assert nbt.__file__.startswith({repo!r}), nbt.__file__\n"
    "auto = make_progress('auto', 3)  # nbclient runs headless: the image view\n"
    "assert in_notebook() and type(auto) is Dashboard and auto.widget is None",
    "board = make_progress('widgets', 3)\n"
    "drive(board, json.load(open({metrics!r})))\n"
    "assert board.redraws == 2 and bytes(board.image.value).startswith(b'\\x89PNG'), board.redraws\n"
    "assert '[frozen-weights]' in board.findings_box.value and 'epoch 1/3' in board.status.value\n"
    "print('dashboard ok', board.redraws, len(board.image.value))",
    "from torch import nn\nfrom tests.helpers import NoisyBlobs, small_cnn\n"
    "cfg = nbt.TrainConfig(epochs=1, batch_size=8, checkpoint_every_minutes=None)\n"
    "run = nbt.fit(small_cnn(), NoisyBlobs(), NoisyBlobs(seed=1), nn.CrossEntropyLoss(), cfg, {fit_dir!r})\n"
    "print('fit ok', len(run.history))",
]


@pytest.mark.slow
def test_dashboard_in_a_real_kernel(run_dir, tmp_path):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    first_epoch = tmp_path / "first_epoch.json"  # one epoch keeps the kernel's redraws few
    first_epoch.write_text(json.dumps({"history": metrics["history"][:1], "steps": metrics["steps"][:2]}))
    values = {"repo": str(REPO), "metrics": str(first_epoch), "fit_dir": str(tmp_path / "fit")}
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c.format(**values)) for c in NOTEBOOK_CELLS]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "dashboard ok" in text and "fit ok 1" in text, text
    # Both dashboards (the replayed widgets one, and the image one fit chose under nbclient) ended as a
    # plain PNG and text: no widget view is left for a saved notebook to fail to render.
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 2
    assert any("[frozen-weights]" in o.get("data", {}).get("text/plain", "") for o in outputs)
    assert not [o for o in outputs if o.output_type == "error"]
    assert sys.modules["nbtools"].__file__.startswith(str(REPO))


def test_dashboard_starts_from_a_resumed_runs_history(run_dir, capsys):
    run = nbt.runs.Run.load(run_dir)
    board = Dashboard(epochs=5, display=False)
    board.resumed(run)
    assert board.history == run.history and board.steps == run.steps and board.redraws == 1
    assert f"val_loss {run.history[-1]['val_loss']:.4g}" in board.status.value
    TextProgress(5).resumed(run)
    assert "restored 3 epochs of history" in capsys.readouterr().out


def test_text_progress_shows_the_interval_without_redrawing_at_each_one(capsys):
    from nbtools.viz.progress import TextProgress

    progress = TextProgress(epochs=2)
    progress.start_epoch(1, total_batches=100, done_batches=0)
    progress.batches_done(10)
    capsys.readouterr()
    progress.interval({"loss": 0.5, "grad_norm": 1.25, "lr": {"default": 1e-3}, "skipped": 0})
    assert capsys.readouterr().err == ""  # no redraw of its own (one every 10 steps cost ~20 us)
    progress.bar.refresh()  # the bar's next redraw (tqdm's, at most every mininterval) shows it
    assert "gnorm=1.25, loss=0.5, lr=0.001, skipped=0" in capsys.readouterr().err
    progress.end_epoch({"epoch": 1, "train_loss": 0.5, "seconds": 1.0})
