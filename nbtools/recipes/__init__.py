"""Ready-made jobs (the data, model, loss and config the CLI, the notebooks and the benchmarks share),
how a run folder rebuilds its job for a resume or for `predict`, and our users' failures reproduced on purpose.

>>> job = nbt.recipes.make_job("resnet3d", epochs=4)
>>> run = job.fit("runs/demo")                                   # doctest: +SKIP
>>> job = nbt.recipes.load_job("runs/demo", lr=1e-3)             # doctest: +SKIP
>>> run = job.fit("runs/demo", resume="latest")                  # doctest: +SKIP
>>> preds = nbt.predict("runs/demo", "new_volumes", tta=True)    # doctest: +SKIP
>>> nbt.recipes.run_predictions("runs/demo")   # the validation set against the run's metrics  # doctest: +SKIP
"""

from nbtools.recipes.data_check import DataChangedError
from nbtools.recipes.head_predictions import HeadPredictions
from nbtools.recipes.job import Job
from nbtools.recipes.jobs import (
    RECIPES,
    focal2d_job,
    make_job,
    recorded_job,
    resnet3d_job,
    scaled_unfreeze,
)
from nbtools.recipes.predict import predict
from nbtools.recipes.predictions import Predictions
from nbtools.recipes.regression_predictions import RegressionPredictions
from nbtools.recipes.resume import load_job
from nbtools.recipes.run_predictions import RunPredictions, run_predictions
from nbtools.recipes.seg_predictions import SegPredictions
from nbtools.recipes.segjobs import unet2d_job, unet3d_job
from nbtools.recipes.sizes import smoke_mode
from nbtools.recipes.user_data import describe_data

__all__ = [
    "RECIPES",
    "DataChangedError",
    "HeadPredictions",
    "Job",
    "Predictions",
    "RegressionPredictions",
    "RunPredictions",
    "SegPredictions",
    "describe_data",
    "focal2d_job",
    "load_job",
    "make_job",
    "predict",
    "recorded_job",
    "resnet3d_job",
    "run_predictions",
    "scaled_unfreeze",
    "smoke_mode",
    "unet2d_job",
    "unet3d_job",
]
