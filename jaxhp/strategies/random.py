"""Random search (Bergstra & Bengio, 2012): independent uniform points of the unit cube.

Point ``i`` is drawn from ``fold_in(key, i)``, so trial ``i`` gets the same configuration
whatever the population size or the number of rounds.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxhp.space import Space
from jaxhp.strategies.base import Strategy, no_tell

__all__ = ["random_search"]


class RandomState(NamedTuple):
    key: jax.Array
    count: int  # points asked so far


def random_search(space: Space) -> Strategy:
    """Uniform random search over ``space`` (log-uniform where ``log=True``).

    Example:
        >>> strategy = random_search(Space(lr=Float(1e-4, 1e-1, log=True)))
        >>> u, state = strategy.ask(strategy.init(jax.random.key(0)), 8)
    """
    dim = space.dim

    @jax.jit
    def _points(key: jax.Array, ids: jax.Array) -> jax.Array:
        return jax.vmap(
            lambda i: jax.random.uniform(jax.random.fold_in(key, i), (dim,))
        )(ids)

    def init(key: jax.Array) -> RandomState:
        return RandomState(key=key, count=0)

    def ask(state: RandomState, n: int) -> tuple[np.ndarray, RandomState]:
        ids = jnp.arange(state.count, state.count + n, dtype=jnp.uint32)
        u = np.asarray(_points(state.key, ids), np.float64)  # [n, D]
        return u, state._replace(count=state.count + n)

    return Strategy(init=init, ask=ask, tell=no_tell, name="random")
