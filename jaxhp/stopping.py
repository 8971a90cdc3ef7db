"""Per-trial early stopping as pure functions over the population axis.

A stopper is called once per epoch with the population's validation values (oriented so
that higher is better) and a mask of the trials that trained this epoch; it returns which
of them to stop. The engine freezes a stopped trial by mask (its state stays bit for bit)
and keeps the weights of its best epoch. A mask saves no FLOPs inside a compiled segment:
compute is saved only when every trial of a bucket has stopped, which ends its program early.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

__all__ = ["Patience", "Stopper", "patience"]


class Stopper(Protocol):
    """``init(n) -> state``; ``update(state, value[P], valid[P]) -> (state, stop[P])``.

    Implementations must be hashable (they are static inside the compiled program).
    """

    def init(self, n: int) -> Any: ...

    def update(
        self, state: Any, value: jax.Array, valid: jax.Array
    ) -> tuple[Any, jax.Array]: ...


class PatienceState(NamedTuple):
    best: jax.Array  # [P] best oriented value seen
    wait: jax.Array  # [P] epochs since the last improvement


@dataclass(frozen=True)
class Patience:
    """Stop a trial after ``patience`` epochs without improving by more than ``min_delta``.

    The rule of Keras' ``EarlyStopping``: an epoch counts as an improvement when the
    validation value beats the best so far by more than ``min_delta`` (in the direction of
    the task's metric).

    Example:
        >>> jaxhp.tune(task, space, early_stopping=jaxhp.stopping.Patience(5))
    """

    patience: int
    min_delta: float = 0.0

    def __post_init__(self):
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(
                f"Patience: patience must be an integer >= 1, got {self.patience!r}"
            )
        if not self.min_delta >= 0:
            raise ValueError(
                f"Patience: min_delta must be >= 0, got {self.min_delta!r}"
            )

    def init(self, n: int) -> PatienceState:
        return PatienceState(
            jnp.full((n,), -jnp.inf, jnp.float32), jnp.zeros((n,), jnp.int32)
        )

    def update(self, state: PatienceState, value: jax.Array, valid: jax.Array):
        better = value > state.best + self.min_delta
        best = jnp.where(valid & better, value, state.best)
        wait = jnp.where(valid, jnp.where(better, 0, state.wait + 1), state.wait)
        return PatienceState(best, wait), valid & (wait >= self.patience)


patience = Patience
