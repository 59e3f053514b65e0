"""Callbacks for `model.fit` that count global steps and write TensorBoard files.

One callback per module; `global_step` is the base that counts batches right
across epochs and `steps_per_execution`; `_summary_writers` shares one
event file per folder. Nothing here trains a model or holds batch-norm maths.
"""

from kbn.callbacks.activation_percentiles import ActivationPercentiles
from kbn.callbacks.batch_norm_statistics import BatchNormStatistics
from kbn.callbacks.global_step import GlobalStepCallback
from kbn.callbacks.progress import TrainingProgress
from kbn.callbacks.renorm_schedule import RenormClippingSchedule
from kbn.callbacks.training_scalars import TrainingScalars
from kbn.callbacks.validation_recorder import ValidationAccuracyRecorder

__all__ = [
    "ActivationPercentiles",
    "BatchNormStatistics",
    "GlobalStepCallback",
    "RenormClippingSchedule",
    "TrainingProgress",
    "TrainingScalars",
    "ValidationAccuracyRecorder",
]
