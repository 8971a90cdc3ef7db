"""jaxhp: hyperparameter tuning that trains whole populations of trials at once in JAX."""

from jaxhp import distributed, engine, stopping, storage, strategies, tasks
from jaxhp.optimize import optimize
from jaxhp.pbt import pbt
from jaxhp.results import Model, Results, Trial
from jaxhp.space import Choice, Fixed, Float, Int, Space, SpaceError
from jaxhp.storage import load
from jaxhp.strategies import STRATEGIES, Strategy
from jaxhp.sweep import Observer, Sweep
from jaxhp.tasks.data import DataError
from jaxhp.trainable import Batch, Trainable
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
    "Trial",
    "distributed",
    "engine",
    "load",
    "stopping",
    "storage",
    "strategies",
    "tasks",
    "optimize",
    "pbt",
    "tune",
]
