"""nbtools: train a 3D ResNet and fine-tune a 2D ResNet with Focal Loss, first time, resumably.

>>> import nbtools as nbt
>>> env = nbt.setup(seed=0)                                   # doctest: +SKIP
>>> run = nbt.fit(model, train_ds, val_ds, loss, cfg, run_dir="runs/demo")   # doctest: +SKIP
"""

from nbtools import data, losses, models, recipes, runs, viz, wording
from nbtools.cache import clear_cache
from nbtools.config import TrainConfig
from nbtools.data.augcheck import check_augmentation
from nbtools.data.validate import validate_dataset
from nbtools.diagnose import doctor, find_lr, find_nonfinite, overfit_batch
from nbtools.env import Env, mount_drive, runs_root, seed_everything, setup
from nbtools.recipes import Predictions, predict
from nbtools.runs import Run, compare_runs, find_checkpoint, list_checkpoints
from nbtools.train import fit

__all__ = [
    "Env",
    "Predictions",
    "Run",
    "TrainConfig",
    "check_augmentation",
    "clear_cache",
    "compare_runs",
    "data",
    "doctor",
    "find_checkpoint",
    "find_lr",
    "find_nonfinite",
    "fit",
    "list_checkpoints",
    "losses",
    "models",
    "mount_drive",
    "overfit_batch",
    "predict",
    "recipes",
    "runs",
    "runs_root",
    "seed_everything",
    "setup",
    "validate_dataset",
    "viz",
    "wording",
]
__version__ = "0.1.0"
