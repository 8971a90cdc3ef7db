"""Kernels for mixed search spaces, written for two points (tinygp style).

Points live in the unit cube of a :class:`~jaxhp.Space` (log-scaled parameters already in
log space). Before the kernel sees them, :func:`transform` snaps integer and numeric-choice
coordinates to the centre of their bin (so two points that decode to the same integer are
the same point to the GP) and turns string choices into category indices.

The kernel is a product: Matérn-5/2 with one lengthscale per numeric dimension (ARD) times
an exponentiated Hamming kernel ``exp(-sum_c [a_c != b_c] / l_c)`` over categories, scaled
by a signal variance. Gram matrices come from a double ``vmap``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxhp.space import Choice, Fixed, Float, Int, Space

__all__ = ["Dims", "KernelParams", "dims_of", "gram", "matern52", "transform", "kernel"]


class Dims(NamedTuple):
    """Static description of the encoded dimensions (hashable)."""

    kinds: tuple[str, ...]  # per dim: "float" | "int" | "ord" | "cat"
    bins: tuple[tuple[float, ...], ...]  # per dim: bin edges in [0, 1] ("int"/"ord")
    n_cats: tuple[int, ...]  # per dim: categories ("cat"), else 0

    @property
    def numeric(self) -> tuple[int, ...]:
        return tuple(i for i, k in enumerate(self.kinds) if k != "cat")

    @property
    def categorical(self) -> tuple[int, ...]:
        return tuple(i for i, k in enumerate(self.kinds) if k == "cat")


def dims_of(space: Space) -> Dims:
    """The kernel's view of ``space``'s encoded dimensions."""
    kinds, bins, cats = [], [], []
    for name in space.searched:
        p = space[name]
        if isinstance(p, Float):
            kinds.append("float"), bins.append(()), cats.append(0)
        elif isinstance(p, Int):
            # Bin edges of each integer in the unit cube (uneven when log=True).
            vals = np.arange(p.low, p.high + 1)
            a, b = p._edges()
            edges = np.concatenate([[vals[0] - 0.5], vals + 0.5])
            edges = (np.log(edges) if p.log else edges) - a
            (
                kinds.append("int"),
                bins.append(tuple(np.clip(edges / (b - a), 0, 1))),
                cats.append(0),
            )
        elif isinstance(p, Choice) and p.numeric:
            k = len(p.values)
            (
                kinds.append("ord"),
                bins.append(tuple(np.linspace(0, 1, k + 1))),
                cats.append(0),
            )
        elif isinstance(p, Choice):
            kinds.append("cat"), bins.append(()), cats.append(len(p.values))
        else:  # pragma: no cover - Fixed parameters are not encoded
            assert isinstance(p, Fixed)
    return Dims(tuple(kinds), tuple(bins), tuple(cats))


def _snap(u: jax.Array, edges: tuple[float, ...]) -> jax.Array:
    e = jnp.asarray(edges)
    i = jnp.clip(jnp.searchsorted(e, u, side="right") - 1, 0, len(edges) - 2)
    return 0.5 * (e[i] + e[i + 1])


def transform(dims: Dims, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One point ``x: [D]`` -> (numeric coordinates ``[Dn]``, category indices ``[Dc]``)."""
    num = []
    for i in dims.numeric:
        num.append(
            _snap(x[i], dims.bins[i]) if dims.kinds[i] in ("int", "ord") else x[i]
        )
    cat = [
        jnp.clip(jnp.floor(x[i] * dims.n_cats[i]), 0, dims.n_cats[i] - 1)
        for i in dims.categorical
    ]
    num_a = jnp.stack(num) if num else jnp.zeros((0,), x.dtype)
    cat_a = jnp.stack(cat) if cat else jnp.zeros((0,), x.dtype)
    return num_a, cat_a


class KernelParams(NamedTuple):
    log_lengthscale: jax.Array  # [D] (numeric dims: Matérn; categorical: Hamming)
    log_variance: jax.Array  # []
    log_noise: jax.Array  # []


def _safe_sqrt(r2: jax.Array) -> jax.Array:
    pos = r2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, r2, 1.0)), 0.0)


def matern52(r: jax.Array) -> jax.Array:
    """Matérn-5/2 correlation at scaled distance ``r``."""
    s5r = math.sqrt(5.0) * r
    return (1.0 + s5r + 5.0 / 3.0 * r * r) * jnp.exp(-s5r)


def kernel(dims: Dims, params: KernelParams, x1: jax.Array, x2: jax.Array) -> jax.Array:
    """k(x1, x2) for two raw points of the unit cube."""
    n1, c1 = transform(dims, x1)
    n2, c2 = transform(dims, x2)
    ls = jnp.exp(params.log_lengthscale)
    ls_num = ls[jnp.asarray(dims.numeric, jnp.int32)] if dims.numeric else ls[:0]
    ls_cat = (
        ls[jnp.asarray(dims.categorical, jnp.int32)] if dims.categorical else ls[:0]
    )
    r = _safe_sqrt(jnp.sum(jnp.square((n1 - n2) / ls_num)))
    ham = jnp.sum(jnp.where(c1 != c2, 1.0, 0.0) / ls_cat)
    return jnp.exp(params.log_variance) * matern52(r) * jnp.exp(-ham)


def gram(dims: Dims, params: KernelParams, xa: jax.Array, xb: jax.Array) -> jax.Array:
    """``K[i, j] = k(xa[i], xb[j])`` by double vmap: ``[A, D] x [B, D] -> [A, B]``."""
    k = lambda a, b: kernel(dims, params, a, b)  # noqa: E731
    return jax.vmap(jax.vmap(k, (None, 0)), (0, None))(xa, xb)
