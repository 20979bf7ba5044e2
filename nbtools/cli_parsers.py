"""The parser of `python -m nbtools` (see nbtools.cli for the commands): every flag, its help and choices."""

from __future__ import annotations

import argparse

from nbtools import recipes
from nbtools.cli_task import add_task_flags
from nbtools.config import MONITORS, SCHEDULES
from nbtools.env import PRECISIONS
from nbtools.recipes.predict import WEIGHTS

DESCRIPTION = "train a recipe, predict with a run, list checkpoints, run the doctor, compare runs"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nbtools", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error, too")
    train = sub.add_parser(
        "train", help="train a recipe on your folder/CSV (--data) or its embedded demo set", parents=[common]
    )
    train.add_argument("job", choices=sorted(recipes.RECIPES))
    train.add_argument(
        "--data",
        help="resnet3d/focal2d: a folder of class sub-folders, or a path,label CSV (--task regression: a "
        "path,target CSV); unet3d/unet2d: a folder of images/ + labels/ (or nnU-Net's imagesTr/labelsTr), or an "
        "image,mask CSV (default: the demo set)",
    )
    train.add_argument("--val", help="a validation folder/CSV (default: a stratified hold-out of --data)")
    train.add_argument("--val-fraction", type=float, help="the hold-out's share of --data (default 0.2)")
    train.add_argument("--positive", help="the positive class of two (default: the second in sorted order)")
    train.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), help="resnet3d: volume shape")
    train.add_argument(
        "--patch",
        type=int,
        nargs="+",
        metavar="N",
        help="unet3d: training patch D H W (or one side for a cube)",
    )
    train.add_argument(
        "--size", type=int, help="focal2d/unet2d: images become size x size; resnet3d: a cube side"
    )
    add_task_flags(train)
    train.add_argument(
        "--allow-changed-data", action="store_true", help="resume on changed files (the change is recorded)"
    )
    train.add_argument("--run-dir", required=True, help="folder for checkpoints, metrics.json and figures")
    train.add_argument("--resume", help='"latest", an epoch number, or a checkpoint path')
    train.add_argument("--overwrite", action="store_true", help="delete the run in --run-dir and start again")
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--precision", choices=PRECISIONS)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--monitor", choices=MONITORS, help="the metric that picks best.pt and early stopping")
    train.add_argument(
        "--threshold", type=float, help="two classes: predict the positive one from this probability"
    )
    train.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="a resume with a new plan: continue the LR curve, or restart it warm",
    )
    train.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="any TrainConfig field, e.g. --set clip_norm=0.5 --set 'group_lrs={\"backbone\": 1e-4}' (repeatable)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--smoke", action="store_true", help="tiny sizes, for a seconds-long check")
    pred = sub.add_parser(
        "predict",
        help="apply a run's model to a folder or CSV of files; write a CSV (a segmentation run: masks)",
        parents=[common],
    )
    pred.add_argument("run_dir")
    pred.add_argument("--data", required=True, help="folder (class sub-folders or files directly) or CSV")
    pred.add_argument(
        "--out",
        required=True,
        help="the CSV to write: path, label, predicted, prob_<class>; for a segmentation run, the folder "
        "for one mask per case and cases.csv (voxels, ml, Dice per class)",
    )
    pred.add_argument("--weights", choices=WEIGHTS, default="best")
    pred.add_argument(
        "--tta", action="store_true", help="average over flips (3D: the trained D/H/W, 2D: horizontal)"
    )
    pred.add_argument("--batch-size", type=int)
    pred.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when there is one)")
    pred.add_argument(
        "--threshold",
        type=float,
        help="two classes: the cut on the positive probability (default: the run's)",
    )
    ls = sub.add_parser(
        "checkpoints", help="list a run folder's checkpoints and whether each loads", parents=[common]
    )
    ls.add_argument("run_dir")
    doc = sub.add_parser(
        "doctor", help="print a run folder's findings (exit code 1 if any is open)", parents=[common]
    )
    doc.add_argument("run_dir")
    runs = sub.add_parser(
        "runs", help="compare the runs in a folder: status, best, findings, config changes", parents=[common]
    )
    runs.add_argument("runs_dir", help="a folder of run folders (or one run folder)")
    runs.add_argument("--baseline", help="the run the config differences are against (default: the oldest)")
    runs.add_argument("--csv", help="also write the table to this CSV file")
    return parser


# the data flags each recipe takes (--data, --val, --val-fraction: all of them)
RECIPE_FLAGS = {
    "resnet3d": ("shape", "size", "positive"),
    "focal2d": ("size", "positive"),
    "unet3d": ("patch",),
    "unet2d": ("size",),
}


def check_recipe_flags(args: argparse.Namespace) -> None:
    """Refuse a data flag the recipe does not take, naming the flags it does."""
    for name in ("shape", "patch", "size", "positive"):
        if getattr(args, name) is not None and name not in RECIPE_FLAGS.get(args.job, (name,)):
            takes = " ".join(f"--{f}" for f in RECIPE_FLAGS[args.job])
            raise ValueError(f"--{name} is not a flag of {args.job}; it takes {takes} (and --data, --val)")
    if args.job in ("unet3d", "unet2d"):
        for name in ("task", "targets", "regression_loss"):
            if getattr(args, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} is not a flag of {args.job}: it trains segmentation only")
    if args.patch is not None and len(args.patch) not in (1, 3):
        raise ValueError(f"--patch takes D H W (or one side for a cube), got {len(args.patch)} numbers")
