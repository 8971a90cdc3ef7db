"""Search strategies as ask/tell pairs of functions, and the registry ``STRATEGIES``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from jaxhp.space import Space
from jaxhp.strategies.base import Strategy
from jaxhp.strategies.bayes import gp_bo
from jaxhp.strategies.grid import grid_search
from jaxhp.strategies.random import random_search
from jaxhp.strategies.sobol import sobol_search

__all__ = [
    "resolve_n_trials",
    "with_enqueued",
    "gp_bo",
    "STRATEGIES",
    "Strategy",
    "grid_search",
    "make_strategy",
    "random_search",
    "sobol_search",
]

STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "bayes": gp_bo,
    "grid": grid_search,
    "random": random_search,
    "sobol": sobol_search,
}


def make_strategy(strategy: str | Strategy, space: Space, **options) -> Strategy:
    """Resolve a strategy name (or pass a :class:`Strategy` through)."""
    if isinstance(strategy, Strategy):
        if options:
            raise ValueError(f"strategy options {sorted(options)} need a strategy name")
        return strategy
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}"
        )
    return STRATEGIES[strategy](space, **options)


class EnqueuedState(NamedTuple):
    inner: Any  # the wrapped strategy's state
    taken: int  # enqueued points asked so far


def with_enqueued(strategy: Strategy, u: np.ndarray) -> Strategy:
    """``strategy`` asked for the points ``u: [k, D]`` first (as Optuna's
    ``enqueue_trial``): the first ``k`` points asked are these, in order, then the
    strategy's own. Every result, these included, is told to the strategy, so bayes
    models them and its initial design shrinks by as many. A grid's size grows by
    ``k``."""
    u = np.asarray(u, np.float64)
    if not len(u):
        return strategy

    def init(key):
        return EnqueuedState(strategy.init(key), 0)

    def ask(state: EnqueuedState, n: int):
        mine = u[state.taken : state.taken + n]
        inner = state.inner
        if len(mine) < n:
            more, inner = strategy.ask(inner, n - len(mine))
            mine = np.concatenate([mine, np.asarray(more, np.float64)])
        return mine, EnqueuedState(inner, min(state.taken + n, len(u)))

    def tell(state: EnqueuedState, points, y):
        return state._replace(inner=strategy.tell(state.inner, points, y))

    size = None if strategy.size is None else strategy.size + len(u)
    return Strategy(init, ask, tell, size, strategy.name)


def resolve_n_trials(strategy: Strategy, n_trials: int | None) -> int:
    """The number of trials to run: ``n_trials``, or the whole grid when it is ``None``.

    A grid smaller than ``n_trials`` is an error; a larger one is sampled (and says so).
    """
    size = strategy.size
    if n_trials is None:
        if size is None:
            raise ValueError(f"n_trials is required for the {strategy.name} strategy")
        return size
    if size is not None and n_trials > size:
        raise ValueError(
            f"the grid has {size} points but n_trials={n_trials}; "
            "lower n_trials, add grid points, or pass n_trials=None for the whole grid"
        )
    if size is not None and n_trials < size:
        print(
            f"jaxhp: the grid has {size} points; n_trials={n_trials} runs a random "
            f"{n_trials} of them (n_trials=None runs all)",
            file=sys.stderr,
        )
    return n_trials
