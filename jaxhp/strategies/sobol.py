"""Quasi-random search on a scrambled Sobol sequence (Sobol 1967; Owen 1998 scrambling).

Low-discrepancy points cover the cube more evenly than independent draws, which helps
most for small budgets. Point ``i`` of the sequence belongs to trial ``i``. Points come
from SciPy's implementation (a dependency of JAX itself), generated in blocks as needed.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import numpy as np
from scipy.stats import qmc

from jaxhp.space import Space
from jaxhp.strategies.base import Strategy, no_tell

__all__ = ["sobol_search"]


class SobolState(NamedTuple):
    seed: int
    count: int


def _sobol_points(dim: int, seed: int, start: int, n: int) -> np.ndarray:
    if dim == 0:
        return np.zeros((n, 0))
    engine = qmc.Sobol(dim, scramble=True, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", UserWarning
        )  # "balance properties" for n != 2^k
        if start:
            engine.fast_forward(start)
        return engine.random(n)


def sobol_search(space: Space) -> Strategy:
    """Scrambled-Sobol quasi-random search over ``space``.

    Example:
        >>> strategy = sobol_search(space)
        >>> u, state = strategy.ask(strategy.init(jax.random.key(0)), 16)
    """
    dim = space.dim

    def init(key: jax.Array) -> SobolState:
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        return SobolState(seed=seed, count=0)

    def ask(state: SobolState, n: int) -> tuple[np.ndarray, SobolState]:
        u = _sobol_points(dim, state.seed, state.count, n)
        return u, state._replace(count=state.count + n)

    return Strategy(init=init, ask=ask, tell=no_tell, name="sobol")
