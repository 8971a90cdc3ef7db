"""The Trainable protocol: what the population engine needs from a model.

A Trainable is three pure functions of *one* trial. The engine ``jax.vmap``s them over the
folds and the population, so ``hp`` holds that trial's hyperparameters as scalar arrays
(``hp["learning_rate"]`` is a traced float, never a Python constant: one compiled program
serves every value).

- ``init(key, hp) -> state``: any pytree (parameters, optimizer state, ...).
- ``step(state, batch, hp) -> (state, metrics)``: one optimizer step on ``batch``;
  ``metrics["loss"]`` is required. Rows with ``batch.mask == False`` are padding (the
  trial's batch is smaller than the bucket's, or the epoch's last batch is short) and must
  not contribute; ``batch.key`` is a fresh PRNG key for this step (dropout, noise).
- ``evaluate(state, data, hp) -> metrics``: metrics on the validation rows of ``data``
  (again honouring ``data.mask``); it must return the task's objective metric.

Optionally ``predict(state, x, hp) -> outputs`` lets a trained trial predict new rows,
and ``keep(state) -> state`` names the part of a state the engine keeps from each
trial's best epoch (what ``predict`` needs: the weights, not the optimizer state; by
default all of it). The engine holds that copy for every trial and selects into it after
each validated epoch, so with Adam keeping only the weights saves a third of a trial's
state memory and two thirds of that per-epoch select; the best model stored with a study
shrinks alike. ``predict`` is then given ``keep(state)``. A Trainable whose
``loss_per_row`` is true returns ``metrics["loss"]`` as a ``[B]`` vector of per-row
terms that sum to the step's loss (zero on padding rows): the engine adds them up once
per epoch instead of reducing them over the batch in every step (a kernel fewer per
step on an accelerator; the built-in MLPs do this).
A Trainable may also offer ``population_step(hp, keep, *, platform)``, returning
``(args, step)`` with ``step(*args, states, batch) -> (states, loss)``: one step of all
members at once (every array leads with the member axis ``M``; a member trains where
``keep`` is on and ``batch.count`` > 0, its real rows the first ``count``). The engine
calls ``population_step`` once an epoch and ``step`` in place of the vmapped ``step``
(over several devices under ``shard_map``, each on its own members); ``None`` means
there is none. The built-in MLP's fused Pallas kernel (``jaxhp.tasks.fused``) is one.
A non-finite ``loss`` marks the trial ``diverged``: the engine discards that step, freezes
the trial and carries on with the others.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

__all__ = ["Batch", "Trainable"]

PyTree = Any


class Batch(NamedTuple):
    """Rows handed to ``step`` (a training batch) or ``evaluate`` (the validation set).

    Attributes:
        x: inputs, ``[B, ...]``.
        y: targets, ``[B, ...]``.
        mask: ``[B]`` bool, False on padding rows.
        key: a PRNG key for this step (in ``evaluate``: a fixed key).
        aux: per-fold extras from the task (e.g. target scaling), or ``None``.
        count: ``[]`` int32, the number of real rows (``mask.sum()``), computed by the
            engine from the step index so that a step need not reduce the mask; ``None``
            where it is not given (``evaluate``).
    """

    x: jax.Array
    y: jax.Array
    mask: jax.Array
    key: jax.Array
    aux: PyTree = None
    count: jax.Array | None = None


@runtime_checkable
class Trainable(Protocol):
    """A model and its training rule, written for one trial (see the module docstring)."""

    def init(self, key: jax.Array, hp: dict[str, jax.Array]) -> PyTree: ...

    def step(
        self, state: PyTree, batch: Batch, hp: dict[str, jax.Array]
    ) -> tuple[PyTree, dict[str, jax.Array]]: ...

    def evaluate(
        self, state: PyTree, data: Batch, hp: dict[str, jax.Array]
    ) -> dict[str, jax.Array]: ...


# Used by the engine (frozen, refilled and best-state rows) and by the stoppers (state
# rows of refilled slots): one helper for "take these trials' rows of a state pytree".
def tree_where(cond: jax.Array, new: Any, old: Any) -> Any:
    """``where(cond, new, old)`` leaf by leaf; ``cond`` broadcasts over trailing axes."""

    def pick(a, b):
        c = cond.reshape(cond.shape + (1,) * (a.ndim - cond.ndim))
        return jnp.where(c, a, b)

    return jax.tree.map(pick, new, old)
