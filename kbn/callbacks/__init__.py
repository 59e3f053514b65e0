"""Callbacks for `model.fit`."""

from kbn.callbacks.global_step import GlobalStepCallback
from kbn.callbacks.progress import TrainingProgress
from kbn.callbacks.renorm_schedule import RenormClippingSchedule
from kbn.callbacks.validation_recorder import ValidationAccuracyRecorder

__all__ = [
    "GlobalStepCallback",
    "RenormClippingSchedule",
    "TrainingProgress",
    "ValidationAccuracyRecorder",
]
