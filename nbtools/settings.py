"""TrainConfig fields given as text, as the CLI's `--set key=value` takes them.

The value is read as JSON where it is JSON (numbers, true/false/null, {"backbone": 1e-4}), else as a
Python literal ({8: "layer2"}, None, 1_000), else as the text itself (sgd); none, true and false in any
case are None, True and False. Whether the field takes the value is TrainConfig's to say: it validates
every field when the config is built (a ConfigFieldError naming the field).

>>> parse_settings(["clip_norm=0.5", 'group_lrs={"backbone": 1e-4}', "ema_decay=none"])
{'clip_norm': 0.5, 'group_lrs': {'backbone': 0.0001}, 'ema_decay': None}
"""

from __future__ import annotations

import ast
import json
from dataclasses import fields
from typing import Any

from nbtools.config import TrainConfig

WORDS = {"none": None, "null": None, "true": True, "false": False}


def parse_value(text: str) -> Any:
    """`text` as the value it spells (see the module's docstring)."""
    stripped = text.strip()
    if stripped.lower() in WORDS:
        return WORDS[stripped.lower()]
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text  # a word: a precision, an optimizer, a monitor ...


def parse_setting(text: str) -> tuple[str, Any]:
    """ "field=value" as (field, value), or a ValueError naming what is wrong and the fields there are."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    names = [f.name for f in fields(TrainConfig)]
    if not sep or not key:
        raise ValueError(f"--set takes field=value (e.g. --set clip_norm=0.5), got {text!r}")
    if key not in names:
        raise ValueError(
            f"--set {text}: {key!r} is not a TrainConfig field; the fields are {', '.join(names)}"
        )
    return key, parse_value(raw)


def parse_settings(texts: list[str]) -> dict[str, Any]:
    """Every "field=value" of `texts`, in order; a field given twice with two values is refused."""
    settings: dict[str, Any] = {}
    for text in texts:
        key, value = parse_setting(text)
        if key in settings and settings[key] != value:
            raise ValueError(f"--set {key} is given twice, as {settings[key]!r} and {value!r}; give it once")
        settings[key] = value
    return settings
