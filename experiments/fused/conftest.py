"""Fixtures of the fused step's checks, and the import paths they need: this folder
(fused_step, fused_task, the scripts) and benchmarks/ (throughput, runinfo)."""

import importlib.util
import pathlib
import sys

import pytest
from sklearn.datasets import load_digits

HERE = pathlib.Path(__file__).resolve().parent
BENCHMARKS = HERE.parents[1] / "benchmarks"
for path in (BENCHMARKS / "investigations", BENCHMARKS, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(scope="session")
def digits():
    return load_digits(return_X_y=True)


@pytest.fixture(scope="session")
def small_digits(digits):
    """400 digits: enough to learn something, small enough to train in milliseconds."""
    X, y = digits
    return X[:400], y[:400]


def load_script(name: str):
    """The module of this folder's ``<name>.py``."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
