"""The committed notebooks: ordered, thin, one `parameters` cell, and no outputs. (pytest also runs
every one of them with nbval in smoke mode: see addopts in pyproject.toml.)"""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
EXPECTED = [
    "00_setup",
    "01_data",
    "02_train_resnet3d",
    "03_finetune_focal2d",
    "04_resume",
    "05_debug",
    "06_segmentation",
    "07_multitask",
]


def test_the_notebooks_are_there_in_order():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    dirty = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_thin_and_ordered(path):
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# "), (
        "a title first"
    )
    assert "Takes:" in "".join(cells[0]["source"]), "the title cell says how long it takes"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell tagged `parameters`, found {len(tagged)}"
    for i, c in enumerate(cells):
        if c["cell_type"] == "code":
            first = "".join(c["source"]).lstrip().splitlines()[0]
            assert first.startswith("#"), (
                f"{path.name} cell {i} should open with a one-line comment: {first!r}"
            )
            assert len("".join(c["source"]).splitlines()) <= 25, (
                f"{path.name} cell {i} is long: move logic to nbtools"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(path, caplog):
    """`papermill -p NAME value` users (and --help-notebook) see every parameter: papermill's own parser
    reads each assignment of the parameters cell without "Unable to parse line" (it gives up on a line
    with a second `=`, even in a comment), and a volume shape takes a plain int (no YAML needed)."""
    translators = pytest.importorskip("papermill.translators")
    cell = next(
        c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", [])
    )
    source = "".join(cell["source"])
    assigned = [line.split("=")[0].strip() for line in source.splitlines() if line and line[0].isupper()]
    with caplog.at_level("WARNING", logger="papermill"):
        found = translators.PythonTranslator.inspect({**cell, "source": source})
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert [p.name for p in found] == assigned
    if "VOLUME_SHAPE" in assigned and path.stem.startswith("02"):
        assert next(p.default for p in found if p.name == "VOLUME_SHAPE").isdigit()


def test_one_install_cell_for_all():
    """Each notebook opens with the same install cell (it must run before nbtools exists, so it cannot
    live in the package); .ci/colab-parity runs it for real in a Colab-like venv."""
    first = {
        p.stem: "".join(
            next(c for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code")["source"]
        )
        for p in NOTEBOOKS
    }
    odd = [name for name, cell in first.items() if cell != first["00_setup"]]
    assert not odd, f"{odd}: the install cell differs from 00_setup's; copy 00_setup's to all of them"
    assert "-c" in first["00_setup"] and "NBTOOLS_SOURCE" in first["00_setup"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["00_setup", "01_data"])
def test_runs_under_nbconvert_too(name, tmp_path):
    """Users also run them with `jupyter nbconvert --execute` (nbval covers all six; this checks that path,
    on the two quick ones)."""
    import os
    import subprocess
    import sys

    src = NOTEBOOKS[EXPECTED.index(name)]
    out = tmp_path / f"{name}.ipynb"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            str(src),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "NBTOOLS_SMOKE": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cells = json.loads(out.read_text())["cells"]
    assert all(c.get("execution_count") for c in cells if c["cell_type"] == "code"), "every code cell ran"
