"""Flax NNX modules as the pure functions a Trainable is written with.

An ``nnx.Module`` is a mutable Python object; the engine ``vmap``s a Trainable's
``init``, ``step`` and ``evaluate`` over trials, so their state must be a pytree of
arrays. :func:`pure` splits a module constructor once into its graph definition (the
static structure, kept on the helper) and its state (``nnx.split``): ``init(key)``
returns a fresh module's ``(params, rest)`` as pytrees, and ``apply(params, rest, x)``
merges them back (``nnx.merge``) to call the module. ``params`` are the ``nnx.Param``
variables (what gradients and the optimizer see); ``rest`` is everything else (batch
statistics, RNG counters), threaded through ``apply``.

Example:
    >>> model = jaxhp.nnx.pure(MLP, din=64, dout=10)   # MLP(din, dout, *, rngs)
    >>> params, rest = model.init(key)
    >>> logits, rest = model.apply(params, rest, x)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
from flax import nnx

__all__ = ["PureModule", "pure"]


@dataclass(frozen=True)
class PureModule:
    """An NNX module constructor as ``init``/``apply`` over pytrees (see :func:`pure`).

    Hashable by its constructor and keyword arguments, so a frozen-dataclass
    Trainable may hold it as a field.
    """

    make: Callable[..., nnx.Module]
    kwargs: tuple[tuple[str, Any], ...] = field(default=())

    def _module(self, key: Any) -> nnx.Module:
        return self.make(**dict(self.kwargs), rngs=nnx.Rngs(key))

    @functools.cached_property
    def graphdef(self) -> Any:
        """The module's static structure, from an abstract instance (no arrays)."""
        abstract = nnx.eval_shape(lambda: self._module(0))
        return nnx.split(abstract, nnx.Param, ...)[0]

    def init(self, key: jax.Array) -> tuple[Any, Any]:
        """A new module's ``(params, rest)``: its ``nnx.Param`` variables and the
        others, as pytrees (``key`` seeds its ``nnx.Rngs``)."""
        _, params, rest = nnx.split(self._module(key), nnx.Param, ...)
        return params, rest

    def apply(
        self, params: Any, rest: Any, *args: Any, **kwargs: Any
    ) -> tuple[Any, Any]:
        """Call the module made of ``params`` and ``rest`` on ``args``: its output and
        its new ``rest`` (updated batch statistics, RNG counts)."""
        model = nnx.merge(self.graphdef, params, rest)
        out = model(*args, **kwargs)
        return out, nnx.split(model, nnx.Param, ...)[2]


def pure(make: Callable[..., nnx.Module], /, **kwargs: Any) -> PureModule:
    """Pure ``init``/``apply`` functions for the NNX module ``make(**kwargs, rngs=...)``.

    ``kwargs`` must be hashable (numbers, strings, tuples): they are part of the
    helper's identity, and so of the Trainable's that holds it.

    Example:
        >>> @dataclass(frozen=True)
        ... class Classifier:
        ...     hidden: int
        ...     @property
        ...     def model(self):
        ...         return jaxhp.nnx.pure(MLP, din=64, hidden=self.hidden, dout=10)
        ...     def init(self, key, hp):
        ...         params, rest = self.model.init(key)
        ...         ...
    """
    return PureModule(make, tuple(sorted(kwargs.items())))
