import gc
import importlib.util
import pathlib
import sys

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

import jaxhp


@pytest.fixture(autouse=True, scope="module")
def _fresh_programs():
    """Drop every compiled program after each test module. A process that compiles
    thousands of XLA programs keeps each one's code mapped (about three memory maps
    a program on the CPU), and one pytest process runs the whole suite: freeing them
    keeps it far from the kernel's map limit and its memory flat."""
    yield
    from jaxhp.engine import DEFAULT_CACHE

    DEFAULT_CACHE.clear()
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


@pytest.fixture(scope="session")
def small_digits(digits):
    """400 digits: enough to learn something, small enough to train in milliseconds."""
    X, y = digits
    return X[:400], y[:400]


@pytest.fixture(scope="session")
def clf_task(small_digits):
    X, y = small_digits
    return jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.25, seed=0)


def tiny_space(**over):
    """A small space over every MLP hyperparameter (cheap shapes, few epochs)."""
    params = dict(
        n_layers=jaxhp.Int(1, 2),
        width=jaxhp.Choice([8, 16]),
        learning_rate=jaxhp.Float(1e-3, 3e-2, log=True),
        weight_decay=jaxhp.Float(1e-6, 1e-3, log=True),
        dropout=jaxhp.Float(0.0, 0.2),
        batch_size=jaxhp.Choice([32, 64]),
        epochs=jaxhp.Int(2, 4),
        optimizer=jaxhp.Choice(["adam", "sgd"]),
    )
    params.update(over)
    return jaxhp.Space(**params)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """Yields the module of benchmarks/<name>.py (a fixture's body). The scripts put
    their own folder on the path to import each other: every copy comes off after."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = [p for p in sys.path if p != str(BENCH)]
