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

The optional capabilities are declared, with their defaults, on :class:`TrainableBase`
(a Trainable may inherit from it, or just define the methods it has: the engine reads
them through :func:`capabilities`, which gives the same defaults to a duck-typed one):

- ``keep(state) -> state`` names the part of a state the engine keeps from each trial's
  best epoch (what ``predict`` needs: the weights, not the optimizer state; by default
  all of it). The engine holds that copy for every trial and selects into it after each
  validated epoch, so with Adam keeping only the weights saves a third of a trial's
  state memory and two thirds of that per-epoch select; the best model stored with a
  study shrinks alike.
- ``predict(state, x, hp) -> outputs`` lets a trained trial predict new rows
  (``result.predict``); it is given ``keep(state)``.
- ``loss_per_row``: when true, ``step`` returns ``metrics["loss"]`` as a ``[B]`` vector of
  per-row terms that sum to the step's loss (zero on padding rows): the engine adds them
  up once per epoch instead of reducing them over the batch in every step (a kernel
  fewer per step on an accelerator; the built-in MLPs do this). Default: a scalar loss.
- ``population_step(hp, keep, *, platform)`` returns ``(args, step)`` with
  ``step(*args, states, batch) -> (states, loss)``: one step of all members at once
  (every array leads with the member axis ``M``; a member trains where ``keep`` is on
  and ``batch.count`` > 0, its real rows the first ``count``). The engine calls
  ``population_step`` once an epoch and ``step`` in place of the vmapped ``step`` (over
  several devices under ``shard_map``, each on its own members); ``None`` (the default)
  means there is none. ``experiments/fused/fused_task.py`` (a Pallas kernel) is one.
- ``flops_per_row``: training FLOPs per example row (forward and backward), a number or
  a method returning one; ``bucketing="auto"`` weighs padding against compiles with it.
  Default 0 (unknown: padding looks free).

A non-finite ``loss`` marks the trial ``diverged``: the engine discards that step, freezes
the trial and carries on with the others.

A Trainable must be hashable (the engine keys its compiled programs by it): a frozen
dataclass, a NamedTuple, or a class that keeps the default identity hash. A plain
``@dataclass`` is not. :func:`jaxhp.tasks.check_trainable` says so before a sweep, along
with the other mistakes it can find by tracing one trial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

__all__ = ["Batch", "Capabilities", "Trainable", "TrainableBase", "capabilities"]

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


class TrainableBase:
    """An optional base class declaring a Trainable's optional capabilities with their
    defaults (see the module docstring). Subclass it and override what the model has;
    ``init``, ``step`` and ``evaluate`` are required.

    Example:
        >>> @dataclass(frozen=True)
        ... class CNN(jaxhp.TrainableBase):
        ...     channels: int
        ...     def init(self, key, hp): ...
        ...     def step(self, state, batch, hp): ...
        ...     def evaluate(self, state, data, hp): ...
        ...     def keep(self, state):
        ...         return state.params
    """

    #: ``step``'s ``metrics["loss"]`` is a ``[B]`` vector of per-row terms.
    loss_per_row: ClassVar[bool] = False
    #: ``keep(state) -> state``: what the engine keeps of the best epoch (None: all).
    keep: ClassVar[Callable[..., PyTree] | None] = None
    #: ``predict(kept_state, x, hp) -> outputs`` (None: the model cannot predict).
    predict: ClassVar[Callable[..., jax.Array] | None] = None
    #: ``population_step(hp, keep, *, platform) -> (args, step)`` (None: vmap ``step``).
    population_step: ClassVar[Callable[..., Any] | None] = None
    #: Training FLOPs per example row, a number or a method returning one.
    flops_per_row: ClassVar[float | Callable[[], float]] = 0.0

    def init(self, key: jax.Array, hp: dict[str, jax.Array]) -> PyTree:
        raise NotImplementedError

    def step(
        self, state: PyTree, batch: Batch, hp: dict[str, jax.Array]
    ) -> tuple[PyTree, dict[str, jax.Array]]:
        raise NotImplementedError

    def evaluate(
        self, state: PyTree, data: Batch, hp: dict[str, jax.Array]
    ) -> dict[str, jax.Array]:
        raise NotImplementedError


@dataclass(frozen=True)
class Capabilities:
    """A Trainable's optional capabilities, read once (:func:`capabilities`).

    Attributes:
        keep: ``keep(state)``, or None to keep the whole state.
        predict: ``predict(kept_state, x, hp)``, or None.
        loss_per_row: ``step``'s loss is a ``[B]`` vector of per-row terms.
        population_step: ``population_step(hp, keep, *, platform)``, or None.
        flops_per_row: training FLOPs per example row (0.0: unknown).
    """

    keep: Callable[[PyTree], PyTree] | None = None
    predict: Callable[..., jax.Array] | None = None
    loss_per_row: bool = False
    population_step: Callable[..., Any] | None = None
    flops_per_row: float = 0.0


def _optional_callable(tr: Any, name: str) -> Callable | None:
    f = getattr(tr, name, None)
    if f is not None and not callable(f):
        raise TypeError(
            f"{type(tr).__name__}.{name} must be a method or None, got {f!r}"
        )
    return f


def capabilities(tr: Any) -> Capabilities:
    """The optional capabilities of Trainable ``tr``, with :class:`TrainableBase`'s
    defaults for what it does not define (a duck-typed Trainable needs no base class).

    Example:
        >>> caps = capabilities(trainable)
        >>> kept = state if caps.keep is None else caps.keep(state)
    """
    flops = getattr(tr, "flops_per_row", 0.0)
    if callable(flops):
        flops = flops()
    return Capabilities(
        keep=_optional_callable(tr, "keep"),
        predict=_optional_callable(tr, "predict"),
        loss_per_row=bool(getattr(tr, "loss_per_row", False)),
        population_step=_optional_callable(tr, "population_step"),
        flops_per_row=float(flops),
    )


# Used by the engine (frozen, refilled and best-state rows) and by the stoppers (state
# rows of refilled slots): one helper for "take these trials' rows of a state pytree".
def tree_where(cond: jax.Array, new: Any, old: Any) -> Any:
    """``where(cond, new, old)`` leaf by leaf; ``cond`` broadcasts over trailing axes."""

    def pick(a, b):
        c = cond.reshape(cond.shape + (1,) * (a.ndim - cond.ndim))
        return jnp.where(c, a, b)

    return jax.tree.map(pick, new, old)
