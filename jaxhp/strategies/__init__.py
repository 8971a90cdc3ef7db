"""Search strategies as ask/tell pairs of functions, and the registry ``STRATEGIES``."""

from __future__ import annotations

from collections.abc import Callable

from jaxhp.space import Space
from jaxhp.strategies.base import Strategy
from jaxhp.strategies.bayes import gp_bo
from jaxhp.strategies.grid import grid_search
from jaxhp.strategies.random import random_search
from jaxhp.strategies.sobol import sobol_search

__all__ = [
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
