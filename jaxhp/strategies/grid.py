"""Grid search: the Cartesian product of per-parameter values, in a seeded random order.

As in Optuna's ``GridSampler`` the grid is visited in a random (seeded) order, so a budget
smaller than the grid still spreads over the whole space instead of sweeping one corner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxhp.space import Space
from jaxhp.strategies.base import Strategy, no_tell

__all__ = ["grid_search"]


class GridState(NamedTuple):
    order: np.ndarray  # [G] permutation of grid indices
    count: int


def grid_search(
    space: Space, *, points: int | Mapping[str, int | Sequence[Any]] = 5
) -> Strategy:
    """Grid search over ``space``.

    Args:
        space: the search space.
        points: points per numeric parameter, or ``{name: count or list of values}``;
            choices contribute all their values (see :meth:`Space.grid`).

    Example:
        >>> strategy = grid_search(space, points={"learning_rate": [1e-3, 1e-2]})
    """
    values = space.grid(points)
    u_grid = space.encode(values)  # [G, D]
    size = u_grid.shape[0]

    def init(key: jax.Array) -> GridState:
        order = np.asarray(jax.random.permutation(key, size))
        return GridState(order=order, count=0)

    def ask(state: GridState, n: int) -> tuple[np.ndarray, GridState]:
        if state.count + n > size:
            raise ValueError(
                f"the grid has {size} points; {state.count} asked already, cannot ask {n} more"
            )
        idx = state.order[state.count : state.count + n]
        return u_grid[idx], state._replace(count=state.count + n)

    return Strategy(init=init, ask=ask, tell=no_tell, size=size, name="grid")
