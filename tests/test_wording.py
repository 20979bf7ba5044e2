"""Messages in the reader's words (nbtools.wording): every option a message names, as a CLI flag that
exists, as a notebook parameter where the notebooks have one, unchanged for Python; and `--set` values."""

import ast
import json
import re
from pathlib import Path

import pytest

import nbtools as nbt
from nbtools import cli, wording
from nbtools.config import ConfigFieldError
from nbtools.settings import parse_settings, parse_value
from nbtools.wording import reword

PACKAGE = Path(nbt.__file__).resolve().parent
NOTEBOOKS = PACKAGE.parent / "notebooks"
WATCHED = ("resume", "overwrite", "allow_changed_data", "lr", "schedule", "monitor", "threshold", "data")


@pytest.mark.parametrize(
    "text, cli_text, notebook_text",
    [
        (
            'Choose one: resume="latest" (or an epoch number); a new run_dir; or overwrite=True to delete it.',
            "Choose one: --resume latest (or an epoch number); a new --run-dir; or --overwrite to delete it.",
            'Choose one: RESUME_FROM = "latest" in 04_resume (or an epoch number); a new RUN_NAME; or '
            "OVERWRITE = True to delete it.",
        ),
        (
            "to continue, fit(..., resume='latest')",
            "to continue, --resume latest",
            'to continue, RESUME_FROM = "latest" in 04_resume',
        ),
        (
            "with load_job(run_dir, allow_changed_data=True), which records it",
            "with --allow-changed-data, which records it",
            "with ALLOW_CHANGED_DATA = True in 04_resume, which records it",
        ),
        (
            "use threshold=0.4369: TrainConfig(threshold=0.4369) later",
            "use --threshold 0.4369: --threshold 0.4369 later",
            "use threshold=0.4369: TrainConfig(threshold=0.4369) later",  # no such parameter: as written
        ),
        (
            "restarts (schedule='restart') or lr=1e-4, monitor='val_loss'.",
            "restarts (--schedule restart) or --lr 1e-4, --monitor val_loss.",
            "restarts (SCHEDULE = \"restart\" in 04_resume) or NEW_LR = 1e-4 in 04_resume, monitor='val_loss'.",
        ),
        (
            'clip_norm=0.5 and group_lrs={"backbone": 1e-4}; ema_decay=None; data= and val=',
            "--set clip_norm=0.5 and --set 'group_lrs={\"backbone\": 1e-4}'; --set ema_decay=none; --data and --val",
            'NEW_CLIP_NORM = 0.5 in 04_resume and group_lrs={"backbone": 1e-4}; ema_decay=None; DATA and VAL_DATA',
        ),
        (  # code to type (a call with other arguments) stays; so do names that only end like an option
            "call nbt.fit(model, train_data, cfg, run_dir, resume='latest'); mask_threshold=None; cfg.lr=1",
            "call nbt.fit(model, train_data, cfg, run_dir, resume='latest'); mask_threshold=None; cfg.lr=1",
            "call nbt.fit(model, train_data, cfg, run_dir, resume='latest'); mask_threshold=None; cfg.lr=1",
        ),
        (
            "start a new run (resume=None), or --set clip_norm=1",
            "start a new run (without --resume), or --set clip_norm=1",
            "start a new run (in 02 or 03), or --set clip_norm=1",
        ),
    ],
)
def test_reword_spells_options_for_each_audience(text, cli_text, notebook_text):
    assert reword(text, "python") == text
    assert reword(text, "cli") == cli_text
    assert reword(text, "notebook") == notebook_text
    assert reword(cli_text, "cli") == cli_text  # words already the CLI's stay


def test_the_chosen_audience_words_findings_stops_and_errors():
    finding = nbt.runs.Finding("x", "val_auc saturates", "use monitor='val_loss'")
    stop = nbt.runs.Stop("interrupted", 'kept step 5: to continue, fit(..., resume="latest")')
    error = nbt.runs.RunExistsError("choose overwrite=True")
    assert "monitor='val_loss'" in str(finding) and str(error) == "choose overwrite=True"
    with wording.speaking("cli"):
        assert "use --monitor val_loss" in str(finding)
        assert str(stop).endswith("to continue, --resume latest") and str(error) == "choose --overwrite"
        with wording.speaking("notebook"):
            assert str(error) == "choose OVERWRITE = True"
        assert wording.audience() == "cli"
    assert wording.audience() == "python" and stop.message.endswith('resume="latest")')  # stored as written
    with pytest.raises(ValueError, match="audience must be one of 'python', 'cli', 'notebook', got 'shell'"):
        wording.set_audience("shell")


def _flags() -> set[str]:
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    return {o for name in ("train", "predict") for a in subs[name]._actions for o in a.option_strings}


def test_every_flag_a_message_names_is_one_the_cli_has():
    assert set(wording.CLI_FLAGS.values()) <= _flags()
    assert {"--set", "--monitor", "--threshold", "--schedule", "--debug"} <= _flags()


def test_every_parameter_a_message_names_is_in_our_notebooks():
    cells = {
        path.stem: "".join(c["source"])
        for path in NOTEBOOKS.glob("0[2346]_*.ipynb")
        for c in json.loads(path.read_text())["cells"]
        if "parameters" in c["metadata"].get("tags", [])
    }
    for option, (parameter, where) in wording.NOTEBOOK_PARAMETERS.items():
        if option == "schedule":
            continue  # 04's SCHEDULE parameter comes with the LR-floor work (issue 25), in another branch
        having = [name for name, source in cells.items() if re.search(rf"^{parameter} = ", source, re.M)]
        assert having, f"no notebook has the parameter {parameter} that messages name for {option}="
        assert where is None or any(name.startswith(where) for name in having), (parameter, having)


def _messages(path: Path):
    """The string literals and f-strings of a module (interpolations as "1"), docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    parts_of_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    skip = docstrings | parts_of_fstrings
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) else "1" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.value


def test_every_message_that_names_an_option_reads_as_flags_on_the_cli():
    """Each literal in nbtools naming resume=, overwrite=, lr= ... comes out of the CLI with no
    Python spelling left, except in code shown to type (a call with several arguments)."""
    named = re.compile(rf"(?<![\w.-])({'|'.join(WATCHED)})=")
    seen = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        for text in _messages(path):
            if not named.search(text) or path.name == "wording.py":
                continue
            seen += 1
            shown = re.sub(r"[\w.]+\([^()]*,[^()]*\)", "CODE", reword(text, "cli"))
            assert not named.search(shown), f"{path.relative_to(PACKAGE)}: {text!r} -> {shown!r}"
    assert seen >= 10  # the checker found the messages (it reads f-strings too)


def test_set_values_are_read_as_json_then_python_then_text():
    assert parse_value("0.5") == 0.5 and parse_value("1e-4") == 1e-4 and parse_value(".5") == 0.5
    assert parse_value("none") is None and parse_value("True") is True and parse_value("false") is False
    assert parse_value('{"backbone": 1e-4}') == {"backbone": 1e-4}
    assert parse_value("{8: 'layer2'}") == {8: "layer2"} and parse_value("sgd") == "sgd"
    assert parse_settings(["clip_norm=0.5", "unfreeze={8: 'layer2'}", "optimizer=sgd"]) == {
        "clip_norm": 0.5,
        "unfreeze": {8: "layer2"},
        "optimizer": "sgd",
    }
    cfg = nbt.TrainConfig(**parse_settings(["clip_norm=0.25", 'group_lrs={"fc": 1e-3}', "ema_decay=0.99"]))
    assert (cfg.clip_norm, cfg.group_lrs, cfg.ema_decay) == (0.25, {"fc": 1e-3}, 0.99)
    with pytest.raises(ValueError, match="'clipnorm' is not a TrainConfig field; the fields are epochs"):
        parse_settings(["clipnorm=0.5"])
    with pytest.raises(ValueError, match="--set takes field=value"):
        parse_settings(["clip_norm"])
    with pytest.raises(ValueError, match=r"given twice, as 0\.5 and 1\.0"):
        parse_settings(["clip_norm=0.5", "clip_norm=1.0"])
    with pytest.raises(ConfigFieldError, match=r"TrainConfig\.clip_norm must be a finite number > 0\.0") as e:
        nbt.TrainConfig(**parse_settings(["clip_norm=-1"]))
    assert e.value.field == "clip_norm"


def test_a_notebook_rerun_over_a_run_names_the_notebooks_parameters(tmp_path):
    """02 and 03 choose the notebook audience before they train; "Run all" again over the run they made
    is refused with OVERWRITE = True and 04_resume's RESUME_FROM, not fit's arguments."""
    for name in ("02_train_resnet3d", "03_finetune_focal2d", "04_resume"):
        cells = ["".join(c["source"]) for c in json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"]]
        chosen = next(i for i, c in enumerate(cells) if 'nbt.wording.set_audience("notebook")' in c)
        assert chosen < next(i for i, c in enumerate(cells) if ".fit(" in c), name
    from torch import nn

    from tests.helpers import NoisyBlobs, small_cnn

    cfg = nbt.TrainConfig(epochs=1, batch_size=16, checkpoint_every_minutes=None)
    args = (NoisyBlobs(32), NoisyBlobs(16, seed=1), nn.CrossEntropyLoss(), cfg, tmp_path / "run")
    nbt.fit(small_cnn(), *args, verbose=False)
    with wording.speaking("notebook"), pytest.raises(nbt.runs.RunExistsError) as e:
        nbt.fit(small_cnn(), *args, verbose=False)
    with wording.speaking("notebook"):
        said = str(e.value)
    assert 'Choose one: RESUME_FROM = "latest" in 04_resume (or an epoch number) to continue it' in said
    assert "a new RUN_NAME to start another; or OVERWRITE = True to delete it" in said
    assert "overwrite=True" not in said and "resume=" not in said and "your own objects" not in said
