"""jaxhp: hyperparameter tuning that trains whole populations of trials at once in JAX."""

from jaxhp import (
    distributed,
    engine,
    losses,
    nnx,
    optim,
    stopping,
    storage,
    strategies,
    tasks,
)
from jaxhp.losses import masked_mean
from jaxhp.optim import per_trial
from jaxhp.optimize import optimize
from jaxhp.pbt import pbt
from jaxhp.results import Model, Results, Trial
from jaxhp.space import Choice, Fixed, Float, Int, Space, SpaceError
from jaxhp.storage import load
from jaxhp.strategies import STRATEGIES, Strategy
from jaxhp.sweep import Observer, Sweep
from jaxhp.tasks.data import DataError
from jaxhp.trainable import Batch, Trainable, TrainableBase
from jaxhp.tune import tune

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Choice",
    "DataError",
    "Fixed",
    "Float",
    "Int",
    "Model",
    "Results",
    "STRATEGIES",
    "Space",
    "SpaceError",
    "Strategy",
    "Sweep",
    "Observer",
    "Trainable",
    "TrainableBase",
    "Trial",
    "distributed",
    "engine",
    "load",
    "losses",
    "masked_mean",
    "nnx",
    "optim",
    "per_trial",
    "stopping",
    "storage",
    "strategies",
    "tasks",
    "optimize",
    "pbt",
    "tune",
]
