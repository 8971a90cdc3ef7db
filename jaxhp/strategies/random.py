"""Random search (Bergstra & Bengio, 2012): independent uniform points of the unit cube.

Point ``i`` is drawn from ``fold_in(key, i)``, so trial ``i`` gets the same configuration
whatever the population size or the number of rounds.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import numpy as np

from jaxhp.space import Space
from jaxhp.strategies.base import Strategy, no_tell
from jaxhp.tasks.base import next_pow2

__all__ = ["random_search"]


@functools.partial(jax.jit, static_argnums=2)
def _points(key: jax.Array, ids: jax.Array, dim: int) -> jax.Array:
    """Point ``i`` of a random stream: uniform in ``[0, 1]^dim`` from ``fold_in(key, i)``
    (module level: one compile per batch size and dimension for the whole process)."""
    return jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), (dim,)))(
        ids
    )


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

    def init(key: jax.Array) -> RandomState:
        return RandomState(key=key, count=0)

    def ask(state: RandomState, n: int) -> tuple[np.ndarray, RandomState]:
        # Point i depends on i alone, so asking a power-of-two batch and keeping the
        # first n changes nothing but the number of compiles (one per power of two).
        # The ids as NumPy: an eager jnp.arange would compile a program of its own for
        # each new start.
        ids = np.arange(state.count, state.count + next_pow2(n), dtype=np.uint32)
        u = np.asarray(_points(state.key, ids, dim), np.float64)[:n]  # [n, D]
        return u, state._replace(count=state.count + n)

    return Strategy(init=init, ask=ask, tell=no_tell, name="random")
