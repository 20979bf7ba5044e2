"""What is specific to a task, one module per task, below train/ and diagnose/: its metrics (accumulated
on the device, one host read per validation pass), monitors and their direction, chance references for
the doctor, and what predict writes. Segmentation (its whole-volume inference beside it) and regression
(its target standardisation beside it)."""

from nbtools.tasks.inference import OVERLAP, evaluate_segmentation, sliding_window_predict
from nbtools.tasks.regression import RegressionAccumulator
from nbtools.tasks.segmentation import (
    EMPTY_POLICIES,
    DiceAccumulator,
    case_summary,
    chance_dice,
    is_segmentation_pair,
    voxel_volume_ml,
)
from nbtools.tasks.target_scaling import TargetScaler, target_stats, zero_final_bias

__all__ = [
    "EMPTY_POLICIES",
    "OVERLAP",
    "DiceAccumulator",
    "RegressionAccumulator",
    "TargetScaler",
    "case_summary",
    "chance_dice",
    "evaluate_segmentation",
    "is_segmentation_pair",
    "sliding_window_predict",
    "target_stats",
    "voxel_volume_ml",
    "zero_final_bias",
]
