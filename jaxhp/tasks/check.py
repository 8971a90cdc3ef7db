"""Pre-flight check of a user's Trainable: its mistakes, found before a sweep compiles.

:func:`check_trainable` traces ``init``, ``step`` and ``evaluate`` (and ``keep`` and
``predict`` where defined) for one trial with ``jax.eval_shape``, under a ``vmap`` over a
population of one as the engine runs them, so nothing is computed or compiled. Each
mistake it finds is a :class:`TrainableError` with a one-line message saying what to
change: an unhashable Trainable, a missing method, a hyperparameter used as a Python
value, a value traced in ``init`` kept for ``step`` (``optax.adam(hp["lr"])`` in a
``TrainState``), a ``step`` without a ``loss`` or whose state changes shape, an
``evaluate`` without the task's metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhp.tasks.data import FoldData
from jaxhp.trainable import Batch, TrainableBase, capabilities

__all__ = ["TrainableError", "check_hashable", "check_trainable"]

_REQUIRED = ("init", "step", "evaluate")

_AS_PYTHON = (
    jax.errors.ConcretizationTypeError,  # and TracerBoolConversionError
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
    jax.errors.NonConcreteBooleanIndexError,
)


class TrainableError(TypeError):
    """A user's Trainable cannot be trained by the engine; the message says why and
    what to change."""


def _name(trainable: Any, label: str | None) -> str:
    return label if label is not None else type(trainable).__name__


def check_hashable(trainable: Any, label: str | None = None) -> None:
    """Raise :class:`TrainableError` if ``trainable`` cannot key a compile cache."""
    try:
        hash(trainable)
    except TypeError as e:
        raise TrainableError(
            f"{_name(trainable, label)} is not hashable ({e}): the engine keys its "
            "compiled programs by the Trainable; declare it @dataclass(frozen=True) "
            "(a plain @dataclass is not hashable) and keep arrays out of its fields"
        ) from None


def _explain(who: str, where: str, e: Exception) -> TrainableError:
    """One line for an exception raised while tracing ``where`` of ``who``."""
    if isinstance(e, jax.errors.UnexpectedTracerError):
        if where == "init":
            msg = (
                "init() used a value traced elsewhere (a global or an attribute set "
                "inside a traced function); compute everything from its arguments"
            )
        else:
            msg = (
                f"{where}() used a value traced in init(): the state keeps something "
                "built from hp in a closure or a static field (typically "
                "TrainState.create(tx=optax.adam(hp['learning_rate']))); build the "
                "optimizer with jaxhp.per_trial(optax.adam)(learning_rate="
                "hp['learning_rate']) so its numbers live in the optimizer state"
            )
    elif isinstance(e, _AS_PYTHON):
        msg = (
            f"{where}() used a traced value as a Python value "
            f"({type(e).__name__}): hp holds arrays, one per trial, under one "
            "compiled program; compute with jnp (jnp.where, not if; no float(), int() "
            "or .item()), give optax numbers through jaxhp.per_trial, or declare a "
            "hyperparameter that sets a shape in TrainableTask(static=...)"
        )
    elif isinstance(e, KeyError):
        key = e.args[0] if e.args else "?"
        msg = (
            f"{where}() raised KeyError({key!r}); if {key!r} is a hyperparameter, "
            f"add it to the space or give the task a default ({key}=...)"
        )
    else:
        first = (str(e).strip().splitlines() or [""])[0]
        msg = f"{where}() failed when traced for one trial: {type(e).__name__}: {first}"
    return TrainableError(f"{who}: {msg}")


def _trace(who: str, where: str, fn: Any, *args: Any) -> Any:
    try:
        return jax.eval_shape(fn, *args)
    except TrainableError:
        raise
    except Exception as e:  # noqa: BLE001 - every failure becomes one clear line
        raise _explain(who, where, e) from e


def _spec(a: Any, lead: int | None = None) -> jax.ShapeDtypeStruct:
    """An abstract array like ``a`` (a NumPy array or dtype with a shape), its leading
    axis replaced by ``lead`` rows, behind a population axis of one."""
    a = np.asarray(a) if not isinstance(a, jax.ShapeDtypeStruct) else a
    shape = tuple(a.shape) if lead is None else (lead, *a.shape[1:])
    dtype = jax.dtypes.canonicalize_dtype(a.dtype)
    return jax.ShapeDtypeStruct((1, *shape), dtype)


def _first_difference(a: Any, b: Any) -> str:
    ta, tb = jax.tree.structure(a), jax.tree.structure(b)
    if ta != tb:
        return f"structure {tb} instead of {ta}"
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True
    ):
        if x.shape != y.shape or x.dtype != y.dtype:
            where = jax.tree_util.keystr(path) or "the state"
            return (
                f"{where} is {y.dtype}{list(y.shape[1:])}, "
                f"was {x.dtype}{list(x.shape[1:])}"
            )
    return ""


def check_trainable(
    trainable: Any,
    hp: Mapping[str, Any],
    data: FoldData,
    *,
    metric: str,
    batch_size: int = 8,
    label: str | None = None,
) -> None:
    """Raise :class:`TrainableError` if the engine could not train ``trainable``.

    Args:
        trainable: the Trainable (see :mod:`jaxhp.trainable`).
        hp: one trial's hyperparameters, ``{name: value}`` (values or 0-d arrays: only
            their dtypes are used; they are traced, as the engine traces them).
        data: the task's folds (only shapes and dtypes are read).
        metric: the key ``evaluate`` must return.
        batch_size: the rows of the abstract training batch.
        label: how messages name the Trainable (default: its class name).

    Example:
        >>> check_trainable(MyCNN(channels=8), {"learning_rate": 0.01}, task.data,
        ...                 metric="accuracy")
    """
    who = _name(trainable, label)
    caps = _check_methods(trainable, who)
    hp_spec, keys, batch, val = _abstract_inputs(hp, data, batch_size)
    state = _trace(who, "init", jax.vmap(trainable.init), keys, hp_spec)
    _check_step(who, trainable, caps, state, batch, hp_spec)
    _check_evaluate(who, trainable, state, val, hp_spec, metric)
    kept = state
    if caps.keep is not None:
        kept = _trace(who, "keep", jax.vmap(caps.keep), state)
    if caps.predict is not None:
        _trace(
            who,
            "predict",
            jax.vmap(caps.predict),
            kept,
            _spec(data.x_val[0]),
            hp_spec,
        )


def _check_methods(trainable: Any, who: str) -> Any:
    """A hashable Trainable with its own init, step and evaluate; its capabilities."""
    check_hashable(trainable, who)
    for attr in _REQUIRED:
        f = getattr(trainable, attr, None)
        if not callable(f) or getattr(type(trainable), attr, None) is getattr(
            TrainableBase, attr
        ):
            raise TrainableError(
                f"{who} has no {attr}() method; a Trainable needs init(key, hp), "
                "step(state, batch, hp) and evaluate(state, data, hp) "
                "(see jaxhp.Trainable)"
            )
    try:
        return capabilities(trainable)
    except (TypeError, ValueError) as e:
        raise TrainableError(f"{who}: {e}") from None


def _abstract_inputs(
    hp: Mapping[str, Any], data: FoldData, b: int
) -> tuple[dict[str, jax.ShapeDtypeStruct], jax.ShapeDtypeStruct, Batch, Batch]:
    """Abstract ``(hp, keys, training batch of b rows, validation batch)`` for a
    population of one, as the engine passes them."""
    hp_spec = {
        k: jax.ShapeDtypeStruct(
            (1,), jax.dtypes.canonicalize_dtype(np.asarray(v).dtype)
        )
        for k, v in hp.items()
    }
    keys = jax.ShapeDtypeStruct((1,), jax.random.key(0).dtype)
    aux = (
        None
        if data.aux is None
        else jax.tree.map(lambda a: _spec(np.asarray(a)[0]), data.aux)
    )
    batch = Batch(
        x=_spec(data.x_train[0], b),
        y=_spec(data.y_train[0], b),
        mask=jax.ShapeDtypeStruct((1, b), jnp.bool_),
        key=keys,
        aux=aux,
        count=jax.ShapeDtypeStruct((1,), jnp.int32),
    )
    val = Batch(
        x=_spec(data.x_val[0]),
        y=_spec(data.y_val[0]),
        mask=_spec(data.val_mask[0]),
        key=keys,
        aux=aux,
    )
    return hp_spec, keys, batch, val


def _check_step(
    who: str, trainable: Any, caps: Any, state: Any, batch: Batch, hp_spec: dict
) -> None:
    """``step`` returns ``(state, metrics)``: a loss of the right shape, and a state
    like ``init``'s."""
    out = _trace(who, "step", jax.vmap(trainable.step), state, batch, hp_spec)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TrainableError(
            f"{who}: step() must return (state, metrics), got {type(out).__name__}"
        )
    new_state, metrics = out
    if not isinstance(metrics, Mapping) or "loss" not in metrics:
        got = (
            sorted(metrics) if isinstance(metrics, Mapping) else type(metrics).__name__
        )
        raise TrainableError(
            f"{who}: step()'s metrics must include 'loss' (the training loss of the "
            f"batch), got {got}; return (state, {{'loss': loss}})"
        )
    b = batch.mask.shape[1]
    loss_shape = tuple(metrics["loss"].shape[1:])
    want = (b,) if caps.loss_per_row else ()
    if loss_shape != want:
        raise TrainableError(
            f"{who}: step()'s 'loss' has shape {list(loss_shape)}, expected "
            + (
                f"[{b}] (per-row terms, as loss_per_row is set)"
                if caps.loss_per_row
                else "a scalar (set loss_per_row = True to return per-row terms)"
            )
        )
    diff = _first_difference(state, new_state)
    if diff:
        raise TrainableError(
            f"{who}: step() returned a state unlike init()'s ({diff}); the engine "
            "loops over steps, so keep the state's structure, shapes and dtypes"
        )


def _check_evaluate(
    who: str, trainable: Any, state: Any, val: Batch, hp_spec: dict, metric: str
) -> None:
    """``evaluate`` returns the task's metric, a scalar."""
    scores = _trace(who, "evaluate", jax.vmap(trainable.evaluate), state, val, hp_spec)
    if not isinstance(scores, Mapping) or metric not in scores:
        got = sorted(scores) if isinstance(scores, Mapping) else type(scores).__name__
        raise TrainableError(
            f"{who}: evaluate() must return the task's metric {metric!r}, got {got}; "
            "return it, or pass TrainableTask(metric=...) one of these"
        )
    if tuple(scores[metric].shape[1:]) != ():
        raise TrainableError(
            f"{who}: evaluate()'s {metric!r} has shape "
            f"{list(scores[metric].shape[1:])}; it must be a scalar"
        )
