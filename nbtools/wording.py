"""A message that names an option, worded for whoever reads it.

A Python user passes an argument (`resume="latest"`, `overwrite=True`), a CLI user a flag (`--resume latest`,
`--overwrite`, `--set clip_norm=0.5`), a user of our notebooks sets a parameter (`RESUME_FROM = "latest"` in
04_resume, `OVERWRITE = True`). Messages are written once, in Python's words, and keep them wherever they are
stored (metrics.json, an exception's args). In them an option is `name=value` (a Python literal, or a
placeholder such as NEW_PATH; `name=` alone names the option), on its own or as the one argument a call is
shown with (`fit(..., resume="latest")`, `TrainConfig(threshold=0.4)`, `load_job(run_dir, data=NEW_PATH)`);
the word `run_dir` is the run folder option. A call shown with other arguments is code to type and stays as
it is written.

Where a message is shown (the progress and dashboard, str() of a Finding, Stop, Run or of our exceptions,
the CLI), `reword` spells those options for the audience the application chose. The application chooses
once, as it configures logging: the CLI runs its commands `with speaking("cli")`, our notebooks call
`set_audience("notebook")`; library code never chooses.

>>> reword('choose resume="latest" or overwrite=True', "cli")
'choose --resume latest or --overwrite'
>>> reword("to continue, fit(..., resume='latest')", "notebook")
'to continue, RESUME_FROM = "latest" in 04_resume'
"""

from __future__ import annotations

import ast
import re
import shlex
from contextlib import contextmanager
from dataclasses import fields

from nbtools.config import TrainConfig

AUDIENCES = ("python", "cli", "notebook")

# The CLI's flags for options (`python -m nbtools train|predict`; tests/test_wording.py checks each exists).
# A TrainConfig field without its own flag is `--set field=value`.
CLI_FLAGS = {
    "resume": "--resume",
    "overwrite": "--overwrite",
    "allow_changed_data": "--allow-changed-data",
    "run_dir": "--run-dir",
    "data": "--data",
    "val": "--val",
    "positive": "--positive",
    "val_fraction": "--val-fraction",
    "shape": "--shape",
    "patch": "--patch",
    "size": "--size",
    "task": "--task",
    "targets": "--targets",
    "regression_loss": "--regression-loss",
    "tta": "--tta",
    "epochs": "--epochs",
    "lr": "--lr",
    "batch_size": "--batch-size",
    "precision": "--precision",
    "monitor": "--monitor",
    "threshold": "--threshold",
    "schedule": "--schedule",
    "seed": "--seed",
}
SWITCHES = ("overwrite", "allow_changed_data", "tta")  # flags without a value: True is the flag itself
CONFIG_FIELDS = tuple(f.name for f in fields(TrainConfig))

# Our notebooks' parameters (02, 03 train; 04 resumes): option -> (parameter, the notebook it is in, if one).
NOTEBOOK_PARAMETERS = {
    "overwrite": ("OVERWRITE", None),
    "resume": ("RESUME_FROM", "04_resume"),
    "allow_changed_data": ("ALLOW_CHANGED_DATA", "04_resume"),
    "lr": ("NEW_LR", "04_resume"),
    "clip_norm": ("NEW_CLIP_NORM", "04_resume"),
    "schedule": ("SCHEDULE", "04_resume"),
    "run_dir": ("RUN_NAME", None),
    "data": ("DATA", None),
    "val": ("VAL_DATA", None),
    "positive": ("POSITIVE", None),
    "patch": ("PATCH", None),
    "epochs": ("EPOCHS", None),
    "precision": ("PRECISION", None),
    "seed": ("SEED", None),
}

_OPTIONS = sorted(
    {*CLI_FLAGS, *CONFIG_FIELDS}, key=len, reverse=True
)  # longest first: "val" after "val_fraction"
_VALUE = r"""(?:"[^"]*"|'[^']*'|\{[^{}]*\}|\([^()]*\)|[^\s,;:()\[\]{}]*?)"""
_END = r"(?=[\s,;:)\]]|\.(?:\s|$)|$)"  # a sentence's full stop ends a value; 0.5's point does not
_OPTION = rf"(?<![\w.])(?<!--set )(?P<name>{'|'.join(_OPTIONS)})=(?P<value>{_VALUE}){_END}"
_ONE_ARGUMENT = re.compile(rf"(?:(?:\.\.\.|run_dir), )?{_OPTION}")
_TEXT = re.compile(
    rf"(?P<call>(?<![\w.])[A-Za-z_][\w.]*\((?P<args>[^()]*)\))|{_OPTION}|(?P<folder>(?<![\w.-])run_dir(?![\w=]))"
)

_chosen = {"audience": "python"}  # the application's choice, as logging's configuration is


def set_audience(audience: str) -> None:
    """Word every message shown from now on for `audience`: "python" (the default), "cli" or "notebook"."""
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {', '.join(map(repr, AUDIENCES))}, got {audience!r}")
    _chosen["audience"] = audience


def audience() -> str:
    return _chosen["audience"]


@contextmanager
def speaking(audience: str):
    """`with speaking("cli"):` words messages for the audience inside, and as before after."""
    before = _chosen["audience"]
    set_audience(audience)
    try:
        yield
    finally:
        _chosen["audience"] = before


def reword(text: str, audience: str | None = None) -> str:
    """`text` (in Python's words) with each option spelt for `audience` (default: the chosen one)."""
    audience = audience or _chosen["audience"]
    if audience == "python":
        return text
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {', '.join(map(repr, AUDIENCES))}, got {audience!r}")

    def respell(m: re.Match) -> str:
        if m["call"]:
            one = _ONE_ARGUMENT.fullmatch(m["args"])
            said = option(one["name"], one["value"], audience) if one else None
        elif m["folder"]:
            said = option("run_dir", "", audience)
        else:
            said = option(m["name"], m["value"], audience)
        return m[0] if said is None else said  # no word for it there: as written

    return _TEXT.sub(respell, str(text))


def option(name: str, value: str, audience: str) -> str | None:
    """One option for `audience` (None where it has no spelling: a notebook without such a parameter);
    `value` as a Python literal's text ("" names the option alone)."""
    if audience == "cli":
        return _flag(name, value)
    if audience == "notebook" and name in NOTEBOOK_PARAMETERS:
        parameter, where = NOTEBOOK_PARAMETERS[name]
        if name == "resume" and value == "None":
            return "in 02 or 03"
        said = f"{parameter} = {_python(value)}" if value else parameter
        return f"{said} in {where}" if where else said
    return None if audience == "notebook" else f"{name}={value}"


def _flag(name: str, value: str) -> str:
    flag = CLI_FLAGS.get(name)
    if flag is None:  # a TrainConfig field without a flag of its own
        literal = {"True": "true", "False": "false", "None": "none"}.get(value, _unquoted(value))
        return f"--set {shlex.quote(f'{name}={literal or name.upper()}')}"
    if not value:
        return flag
    if value in ("None", "False") or (name in SWITCHES and value != "True"):
        return f"without {flag}"
    if name in SWITCHES:
        return flag
    if name in ("shape", "patch") and value.startswith("("):
        return f"{flag} {' '.join(p.strip() for p in value.strip('()').split(',') if p.strip())}"
    return f"{flag} {shlex.quote(_unquoted(value))}"


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _python(value: str) -> str:
    """A literal as a notebook cell writes it: strings in double quotes."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value  # a placeholder such as NEW_PATH
    return f'"{parsed}"' if isinstance(parsed, str) else value


class Reworded:
    """Mixin for an exception whose message names options: str() spells them for the chosen audience
    (`class RunExistsError(Reworded, FileExistsError)`), wherever the exception is shown."""

    def __str__(self) -> str:
        return reword(super().__str__())
