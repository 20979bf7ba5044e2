"""`python -m nbtools ...`: train a recipe, predict with a run, list checkpoints, run the doctor.

python -m nbtools train resnet3d --run-dir runs/demo
python -m nbtools train resnet3d --run-dir runs/demo --resume latest --epochs 10
python -m nbtools train resnet3d --data volumes/ --shape 64 64 64 --run-dir runs/mine   # your files
python -m nbtools train focal2d --data pages.csv --val val_pages/ --size 224 --run-dir runs/pages
python -m nbtools train resnet3d --run-dir runs/mine --resume latest   # the same files, checked
python -m nbtools train focal2d --run-dir runs/p --monitor val_loss --set clip_norm=0.25 --set ema_decay=0.999
python -m nbtools predict runs/demo --data new_volumes --out predictions.csv --tta
python -m nbtools checkpoints runs/demo
python -m nbtools doctor runs/demo      # exit code 0: none open, 1: open findings printed, 2: no run
python -m nbtools runs runs --baseline demo --csv runs.csv   # runs side by side: status, best, config changes

Messages name flags (nbtools.wording). A known error (bad data, a missing package, a run that exists or is
locked, changed data, a bad value) exits with 2 and its message, no traceback (--debug shows it); Ctrl-C
exits with 130 and the command that resumes; training goes on to its checkpoint when the output's reader
has gone (nbtools.cli_exit).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from nbtools import recipes
from nbtools.cli_exit import quiet_output, resume_command, run_command
from nbtools.cli_parsers import build_parser, check_recipe_flags
from nbtools.cli_task import best_line, data_line, metrics_line, task_args
from nbtools.config import ConfigFieldError
from nbtools.diagnose import doctor
from nbtools.env import setup
from nbtools.recipes import SegPredictions
from nbtools.runs import NonFiniteError, compare_runs, list_checkpoints, open_first
from nbtools.settings import parse_settings
from nbtools.wording import CLI_FLAGS, speaking

__all__ = ["build_parser", "main"]


def _resume(value: str | None):
    if value is None or value == "latest":
        return value
    try:
        return int(value)
    except ValueError:
        return value  # a checkpoint path


FLAGGED_FIELDS = ("epochs", "precision", "lr", "batch_size", "monitor", "threshold", "schedule")


def _config_overrides(args: argparse.Namespace) -> dict[str, tuple[object, str]]:
    """TrainConfig fields from the flags and --set: {field: (value, how it was given)}."""
    given = {}
    for text in args.set or []:
        key = text.partition("=")[0].strip()
        if key in CLI_FLAGS:  # one way to set each field: --lr 1e-4, not also --set lr=1e-4
            raise ValueError(f"--set {text}: {key} has its own flag, {CLI_FLAGS[key]}")
        given.update({k: (v, f"--set {text}") for k, v in parse_settings([text]).items()})
    for k in FLAGGED_FIELDS:
        if getattr(args, k) is not None:
            given[k] = (getattr(args, k), f"{CLI_FLAGS[k]} {getattr(args, k)}")
    return given


def _train(args: argparse.Namespace) -> int:
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 prints
    given = _config_overrides(args)  # before setup: a bad --set ends the command at once
    env = setup(seed=args.seed, verbose=main_rank)
    try:
        job = _job(args, {k: v for k, (v, _) in given.items()})
    except ConfigFieldError as e:  # a value the config refuses: name the flag or --set that gave it
        raise ValueError(f"{given[e.field][1]}: {e}" if e.field in given else str(e)) from e
    try:
        run = job.fit(
            args.run_dir,
            resume=_resume(args.resume),
            overwrite=args.overwrite,
            device=env.device,
            verbose=main_rank,
        )
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    if not main_rank:
        return 0
    best = run.best() or {}
    print(f"run folder: {run.run_dir}")
    print(best_line(run.best_epoch, best))
    if run.meta.get("data"):
        print(data_line(run.meta["data"]))
    print_findings(run.findings)
    return 0


def _job(args: argparse.Namespace, overrides: dict):
    """The recipe's job with the options given; on --resume, the run's own job with them on top."""
    check_recipe_flags(args)
    if args.resume is None:
        return recipes.make_job(args.job, smoke=args.smoke, seed=args.seed, **_data_args(args), **overrides)
    fixed = [f"--{k.replace('_', '-')}" for k in _data_args(args) if k not in ("data", "val")]
    if fixed:
        raise ValueError(
            f"{', '.join(fixed)}: the run fixes them; a resume takes only --data/--val (where its files are now)"
        )
    try:
        job = recipes.load_job(
            args.run_dir,
            data=args.data,
            val=args.val,
            allow_changed_data=args.allow_changed_data,
            **overrides,
        )
    except ConfigFieldError:
        raise
    except (FileNotFoundError, ValueError) as e:  # not a run folder, no recipe, other data
        raise ValueError(f"cannot resume {args.run_dir}: {e}") from e
    if job.meta["recipe"] != args.job:
        raise ValueError(
            f"{args.run_dir} was trained with the {job.meta['recipe']!r} recipe, not {args.job!r}; run: python "
            f"-m nbtools train {job.meta['recipe']} --run-dir {args.run_dir} --resume {args.resume}"
        )
    return job


def _data_args(args: argparse.Namespace) -> dict:
    """The recipe arguments for the user's data, those given on the command line."""
    given = {
        "data": args.data,
        "val": args.val,
        "positive": args.positive,
        "val_fraction": args.val_fraction,
        "shape": args.shape and tuple(args.shape),
        "patch": args.patch and (args.patch[0] if len(args.patch) == 1 else tuple(args.patch)),
        "size": args.size,
    }
    return {**{k: v for k, v in given.items() if v is not None}, **task_args(args)}


def print_findings(findings: list) -> None:
    """The end summary's findings: how many are open, then the open ones, then the resolved ones."""
    if findings:
        n_open = sum(f.is_open for f in findings)
        print(f"findings: {n_open} open, {len(findings) - n_open} resolved")
    for f in open_first(findings):
        print(f)


def _predict(args: argparse.Namespace) -> int:
    preds = recipes.predict(
        args.run_dir,
        args.data,
        weights=args.weights,
        tta=args.tta,
        batch_size=args.batch_size,
        device=args.device,
        threshold=args.threshold,
    )
    if isinstance(preds, SegPredictions):
        table = preds.save(args.out)
        print(f"wrote {len(preds)} masks to {args.out} and their table to {table}: {preds!r}")
        return 0
    out = preds.to_csv(args.out)
    print(f"wrote {len(preds)} rows to {out}: {preds!r}")
    if metrics_line(preds):
        print(metrics_line(preds))
    return 0


def _doctor(run_dir: str) -> int:
    findings = doctor(run_dir)  # not a run folder, or an unreadable metrics.json: exit code 2
    for f in findings:  # open first, resolved ones marked
        print(f)
    if not findings:
        print(f"{run_dir}: no findings")
    return 1 if any(f.is_open for f in findings) else 0


def _runs(args: argparse.Namespace) -> int:
    try:
        table = compare_runs(args.runs_dir, baseline=args.baseline)
        out = table.to_csv(args.csv) if args.csv and len(table) else None
    except (OSError, ValueError) as e:  # no such folder, a baseline that is not there, an unwritable CSV
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    if out is not None:
        print(f"wrote {len(table)} rows to {out}")
    return 0 if len(table) else 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with speaking("cli"), quiet_output():  # flags in messages; output to a reader gone fails quietly
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        debug = getattr(args, "debug", False)
        return run_command(lambda: _command(args), debug, lambda: _interrupted(args))


def _interrupted(args: argparse.Namespace) -> str:
    return resume_command(args.job, args.run_dir) if args.command == "train" else "interrupted"


def _command(args: argparse.Namespace) -> int:
    if args.command == "train":
        return _train(args)
    if args.command == "predict":
        return _predict(args)
    if args.command == "doctor":
        return _doctor(args.run_dir)
    if args.command == "runs":
        return _runs(args)
    print(list_checkpoints(args.run_dir))
    return 0
