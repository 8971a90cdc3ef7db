"""Built-in tasks and the Task interface."""

from jaxhp.tasks.base import Task, TrainableTask, pad_max
from jaxhp.tasks.check import TrainableError, check_trainable
from jaxhp.tasks.data import DataError
from jaxhp.tasks.mlp import MLP_DEFAULTS, MLPClassifier, MLPRegressor

__all__ = [
    "DataError",
    "MLPClassifier",
    "MLPRegressor",
    "MLP_DEFAULTS",
    "Task",
    "TrainableError",
    "TrainableTask",
    "check_trainable",
    "pad_max",
]
