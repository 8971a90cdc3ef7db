"""One fused optimizer whose kind and numbers are per-trial arrays.

A population mixes Adam, AdamW and SGD with momentum. Running three optax optimizers and
selecting with ``lax.switch`` would keep three states and make three passes over memory;
here all three share one state (``mu``, ``nu``) and one elementwise pass, with the kind
chosen by ``jnp.where`` from an integer per trial. Each kind matches optax exactly (see
``tests/test_optim.py``):

- ``adam``:  ``chain(add_decayed_weights(wd), adam(lr))``  (L2 penalty in the gradient)
- ``adamw``: ``adamw(lr, weight_decay=wd)``                (decoupled weight decay)
- ``sgd``:   ``chain(add_decayed_weights(wd), sgd(lr, momentum))``

The learning rate may follow a schedule over the trial's updates (``lr_schedule``:
constant, or cosine or linear decay to zero, after ``warmup``, a linear warm-up over that
fraction of them; :func:`lr_scale`). Without warm-up it is optax's
``cosine_decay_schedule`` or ``linear_schedule``; the warm-up reaches the full rate at
its last update, one update before optax's ``warmup_cosine_decay_schedule`` does.

For a user's own model, :func:`per_trial` (and :func:`from_hp`) turn any optax optimizer
into one whose numbers come from the trial's ``hp``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "OptState",
    "PerTrial",
    "from_hp",
    "lr_scale",
    "opt_init",
    "opt_update",
    "per_trial",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
ADAM, ADAMW, SGD = range(3)
SCHEDULES = ("constant", "cosine", "linear")
CONSTANT, COSINE, LINEAR = range(3)
B1, B2, EPS = 0.9, 0.999, 1e-8


class OptState(NamedTuple):
    count: jax.Array  # [] int32: steps taken (kept at 0 without Adam or a schedule)
    mu: object  # first moment (Adam) or momentum buffer (SGD), like params
    nu: object  # second moment (Adam), like params; None when no Adam kind is used


def opt_init(params, *, kinds: tuple[int, ...] = (ADAM, ADAMW, SGD)) -> OptState:
    """Zero state; ``nu`` is only kept when ``kinds`` (static) includes Adam or AdamW."""
    has_adam = any(k in (ADAM, ADAMW) for k in kinds)
    nu = jax.tree.map(jnp.zeros_like, params) if has_adam else None
    return OptState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params), nu)


def lr_scale(count: jax.Array, hp) -> jax.Array:
    """The learning rate's factor at update ``count`` (1 for the first) of
    ``total_steps``: a linear warm-up over the first ``warmup`` fraction of them (to 1
    at its last), then ``lr_schedule``'s decay over the rest (cosine or linear to zero,
    or none). Elementwise: scalars for one trial, or arrays for many."""
    s = (count - 1).astype(jnp.float32)  # 0-based, as an optax schedule's count
    total = hp["total_steps"].astype(jnp.float32)
    warm = jnp.floor(hp["warmup"].astype(jnp.float32) * total)
    ramp = jnp.where(
        warm > 0, jnp.minimum((s + 1.0) / jnp.maximum(warm, 1.0), 1.0), 1.0
    )
    frac = jnp.clip((s - warm) / jnp.maximum(total - warm, 1.0), 0.0, 1.0)
    code = hp["lr_schedule"]
    decay = jnp.where(
        code == COSINE,
        0.5 * (1.0 + jnp.cos(jnp.pi * frac)),
        jnp.where(code == LINEAR, 1.0 - frac, 1.0),
    )
    return ramp * decay


def opt_update(
    grads,
    state: OptState,
    params,
    hp,
    *,
    kinds: tuple[int, ...] = (ADAM, ADAMW, SGD),
    scheduled: bool = False,
):
    """New ``(params, state)`` after one step.

    Args:
        hp: ``optimizer`` (int code), ``learning_rate``, ``weight_decay``, ``momentum``;
            with ``scheduled``, ``lr_schedule`` (code), ``warmup``, ``total_steps``.
        kinds: the optimizer codes present in the population (static): kinds absent from it
            are not computed.
        scheduled: some trial's learning rate follows a schedule (static); otherwise
            ``lr_schedule`` and ``warmup`` are not read and nothing is computed for them.
    """
    code, lr, wd, mom = (
        hp["optimizer"],
        hp["learning_rate"],
        hp["weight_decay"],
        hp["momentum"],
    )
    has_adam = any(k in (ADAM, ADAMW) for k in kinds)
    # The step count feeds Adam's bias correction and the schedule: without either it
    # stays put (one kernel fewer per step).
    count = state.count + 1 if has_adam or scheduled else state.count
    if scheduled:
        lr = lr * lr_scale(count, hp)
    t = count.astype(jnp.float32)
    bc1, bc2 = 1.0 - B1**t, 1.0 - B2**t
    has_sgd = SGD in kinds
    has_adamw = ADAMW in kinds
    decoupled = code == ADAMW
    # The L2 and decoupled decay coefficients (a select only when AdamW is mixed in).
    wd_l2 = jnp.where(decoupled, 0.0, wd) if has_adamw else wd
    wd_dec = jnp.where(decoupled, wd, 0.0) if has_adamw else None

    def leaf(g, m, v, p):
        g_l2 = g + wd_l2 * p
        new_m = new_v = upd = None
        if has_adam:
            m_a = B1 * m + (1.0 - B1) * g_l2
            v_a = B2 * v + (1.0 - B2) * jnp.square(g_l2)
            u_a = (m_a / bc1) / (jnp.sqrt(v_a / bc2) + EPS)
            if has_adamw:
                u_a = u_a + wd_dec * p
            new_m, new_v, upd = m_a, v_a, u_a
        if has_sgd:
            m_s = mom * m + g_l2
            if has_adam:
                is_sgd = code == SGD
                new_m = jnp.where(is_sgd, m_s, new_m)
                new_v = jnp.where(is_sgd, v, new_v)
                upd = jnp.where(is_sgd, m_s, upd)
            else:
                new_m, new_v, upd = m_s, v, m_s
        return p - lr * upd, new_m, new_v

    treedef = jax.tree.structure(params)
    nu = treedef.flatten_up_to(state.nu) if has_adam else [None] * treedef.num_leaves
    out = [
        leaf(g, m, v, p)
        for g, m, v, p in zip(
            treedef.flatten_up_to(grads),
            treedef.flatten_up_to(state.mu),
            nu,
            treedef.flatten_up_to(params),
            strict=True,
        )
    ]
    new_p = treedef.unflatten([x[0] for x in out])
    new_m = treedef.unflatten([x[1] for x in out])
    new_v = treedef.unflatten([x[2] for x in out]) if has_adam else None
    return new_p, OptState(count, new_m, new_v)


# ----------------------------------------------------------------- any optax optimizer


def _numeric(v: Any) -> bool:
    """A number ``inject_hyperparams`` keeps in the state (a bool stays static)."""
    if isinstance(v, bool):
        return False
    return isinstance(v, (int, float)) or (hasattr(v, "dtype") and hasattr(v, "shape"))


class PerTrial:
    """An optax ``GradientTransformation`` whose numbers live in its state.

    Made by :func:`per_trial`. It is ``optax.inject_hyperparams(factory)(**kwargs)``
    with one difference that matters inside a Trainable: it compares equal, and hashes,
    by the factory and the names of its numbers, never by their values, and its
    ``update`` reads the numbers from the state alone. So it can sit in a static field
    of the state, as Flax's ``TrainState(tx=...)`` keeps it: the numbers traced in
    ``init`` (one per trial) are stored in the optimizer state, and the state's
    structure is the same whenever ``init`` is traced (a plain ``optax.adam(lr)`` there
    keeps the traced ``lr`` in a closure: ``step`` then fails with JAX's
    ``UnexpectedTracerError``, since that value belonged to ``init``'s trace).
    """

    __slots__ = ("factory", "numbers", "others", "_key")

    def __init__(self, factory: Callable[..., Any], numbers: dict, others: dict):
        self.factory = factory
        self.numbers = numbers  # traced in init; read by init only
        self.others = others
        try:
            other_key: Hashable = tuple(sorted(others.items()))
            hash(other_key)
        except TypeError:  # an unhashable option (a mask tree): compared by identity
            other_key = id(self)
        self._key = (factory, tuple(sorted(numbers)), other_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PerTrial) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        name = getattr(self.factory, "__name__", repr(self.factory))
        return f"per_trial({name})({', '.join(sorted(self.numbers))})"

    def __reduce__(self):
        # The values were traced in init and are dead outside it: a stored model keeps
        # the names (its numbers are in the optimizer state).
        return (PerTrial, (self.factory, dict.fromkeys(self.numbers), self.others))

    def _inner(self, numbers: Mapping[str, Any]) -> Any:
        import optax

        return optax.inject_hyperparams(self.factory)(**self.others, **numbers)

    def init(self, params: Any) -> Any:
        return self._inner(self.numbers).init(params)

    def update(self, updates: Any, state: Any, params: Any = None, **extra: Any):
        # The numbers of this trial are the state's, whatever this object holds.
        return self._inner(state.hyperparams).update(updates, state, params, **extra)


def per_trial(factory: Callable[..., Any]) -> Callable[..., PerTrial]:
    """An optax optimizer factory whose numeric arguments may be per-trial arrays.

    ``per_trial(optax.adamw)(learning_rate=hp["learning_rate"])`` is an optimizer for
    one trial that a population runs with one compiled program: every numeric
    argument (traced or not) is kept in the optimizer state, as
    ``optax.inject_hyperparams`` does; other arguments (booleans, masks, functions)
    stay static. Use it wherever the optimizer is built from ``hp``, in particular for
    Flax's ``TrainState.create(..., tx=...)`` inside ``init``.

    Example:
        >>> def init(self, key, hp):
        ...     params = self.module.init(key, x0)["params"]
        ...     tx = jaxhp.per_trial(optax.adamw)(
        ...         learning_rate=hp["learning_rate"], weight_decay=hp["weight_decay"]
        ...     )
        ...     return TrainState.create(apply_fn=self.module.apply, params=params, tx=tx)
    """
    if not callable(factory):
        raise TypeError(f"per_trial takes an optax optimizer factory, got {factory!r}")

    def make(**kwargs: Any) -> PerTrial:
        numbers = {k: v for k, v in kwargs.items() if _numeric(v)}
        others = {k: v for k, v in kwargs.items() if k not in numbers}
        return PerTrial(factory, numbers, others)

    return make


def from_hp(
    factory: Callable[..., Any], hp: Mapping[str, Any], /, **names: str
) -> PerTrial:
    """``per_trial(factory)`` with each argument read from ``hp`` by name.

    Example:
        >>> tx = jaxhp.optim.from_hp(optax.adamw, hp, learning_rate="lr",
        ...                          weight_decay="weight_decay")
    """
    missing = [v for v in names.values() if v not in hp]
    if missing:
        raise KeyError(
            f"from_hp: hp has no {missing[0]!r}; it has {sorted(hp)} (add it to the "
            "space or give the task a default)"
        )
    return per_trial(factory)(**{arg: hp[name] for arg, name in names.items()})
