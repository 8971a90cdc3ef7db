"""The strategy interface: an ask/tell pair of functions over a state pytree.

A strategy proposes points of the unit cube ``[0, 1]^D`` of a :class:`~jaxhp.Space`; the
caller decodes them. ``tell`` receives objective values to *minimise* (the caller flips
the sign for maximised metrics), with NaN for trials that diverged or failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Strategy"]


class Strategy(NamedTuple):
    """A search strategy as pure functions (the optax/evosax shape).

    Attributes:
        init: ``init(key) -> state``.
        ask: ``ask(state, n) -> (u, state)`` with ``u: [n, D]`` in the unit cube; the
            i-th point asked over the whole sweep belongs to trial ``i``.
        tell: ``tell(state, u, y) -> state`` with ``y: [n]`` to minimise (NaN = failed).
        size: number of distinct candidates when finite (a grid), else ``None``.
        name: a short name for tables and logs.
    """

    init: Callable[[Any], Any]
    ask: Callable[[Any, int], tuple[np.ndarray, Any]]
    tell: Callable[[Any, np.ndarray, np.ndarray], Any]
    size: int | None = None
    name: str = "custom"


def no_tell(state: Any, u: np.ndarray, y: np.ndarray) -> Any:
    """``tell`` for strategies that do not learn from results."""
    del u, y
    return state
