"""How a `python -m nbtools` command ends, whatever happens on the way.

- An error nbtools raises for the user (bad data, a missing package, a run that exists or is locked,
  changed data, a bad config value: an exception class of nbtools, or a ValueError / OSError / ImportError
  raised by nbtools' code) ends the command with its message on stderr and exit code 2, without a
  traceback (`--debug` shows it). Anything else is a bug and keeps its traceback.
- Ctrl-C (KeyboardInterrupt) ends it with exit code 130 and what to do next (for `train`, the command
  that resumes).
- Output whose reader has gone (`... | tee log` and Ctrl-C ends `tee` first) never changes that: writes to
  stdout and stderr fail quietly, and at exit the dead streams point at /dev/null, so Python's final
  flush cannot turn exit code 130 into 120.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from nbtools.runs import list_checkpoints
from nbtools.viz.progress import QuietStream
from nbtools.wording import reword

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command ended by Ctrl-C
USER_ERROR = 2
PACKAGE = Path(__file__).resolve().parent


@contextmanager
def quiet_output():
    """stdout and stderr as QuietStreams inside; on the way out, a stream whose reader went away is
    pointed at /dev/null (its file descriptor), so nothing later fails on it."""
    streams = sys.stdout, sys.stderr
    quiet = QuietStream(sys.stdout), QuietStream(sys.stderr)
    sys.stdout, sys.stderr = quiet
    try:
        yield
    finally:
        for q in quiet:
            q.flush()
        sys.stdout, sys.stderr = streams
        for q, stream in zip(quiet, streams):
            if q.broken:
                _to_devnull(stream)


def _to_devnull(stream) -> None:
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return  # not a file (pytest's capture): nothing will flush it at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def run_command(command: Callable[[], int], debug: bool, interrupted: Callable[[], str]) -> int:
    """command()'s exit code; a known error as its message and 2, Ctrl-C as `interrupted()` and 130."""
    try:
        return command()
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(interrupted(), file=sys.stderr)
        return INTERRUPTED
    except Exception as e:
        if not is_known(e):
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {message(e)}", file=sys.stderr)
        return USER_ERROR


def is_known(e: BaseException) -> bool:
    """An error nbtools raised for the user, with a message that says what to do."""
    if type(e).__module__.split(".")[0] == "nbtools" or isinstance(e, ImportError):
        return True
    if not isinstance(e, (ValueError, OSError)):
        return False
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)


def message(e: BaseException) -> str:
    """The error's own message in the CLI's words. An error raised in a DataLoader worker comes back
    with the worker's traceback as its message; only the message at its end is the user's."""
    text = str(e)
    if "Original Traceback (most recent call last):" in text:
        at = list(re.finditer(rf"^(?:[\w.]+\.)?{re.escape(type(e).__name__)}: ", text, re.MULTILINE))
        if at:
            text = text[at[-1].end() :].rstrip()
    return reword(text, "cli")


def resume_command(recipe: str, run_dir: str) -> str:
    """What to do after Ctrl-C stopped `train`: the command that resumes, when a checkpoint was kept."""
    if not list_checkpoints(run_dir, verify=False):
        return (
            f"interrupted before a checkpoint was kept in {run_dir}: nothing to resume; run the command again"
        )
    return f"interrupted; to continue: python -m nbtools train {recipe} --run-dir {shlex.quote(run_dir)} --resume latest"
