"""Kernels for mixed search spaces, written for two points (tinygp style).

Points live in the unit cube of a :class:`~jaxhp.Space` (log-scaled parameters already in
log space). Before the kernel sees them, :func:`transform` snaps integer and numeric-choice
coordinates to the centre of their bin (so two points that decode to the same integer are
the same point to the GP), turns string choices into category indices, and puts the
coordinates of parameters that a point does not use (``when=`` conditions) at one
constant, so points that differ only there are the same point (imputation, as SMAC and
Lévesque et al. 2017 treat inactive parameters).

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

from jaxhp.space import INACTIVE_AT, Choice, Fixed, Float, Int, Space

__all__ = ["Dims", "KernelParams", "dims_of", "gram", "matern52", "transform", "kernel"]


class Dims(NamedTuple):
    """Static description of the encoded dimensions (hashable)."""

    kinds: tuple[str, ...]  # per dim: "float" | "int" | "ord" | "cat"
    bins: tuple[tuple[float, ...], ...]  # per dim: bin edges in [0, 1] ("int"/"ord")
    n_cats: tuple[int, ...]  # per dim: categories ("cat"), else 0
    #: per dim: its conditions, each (parent dim, the parent's bin edges in [0, 1],
    #: whether each bin activates it); parent dim -1: a Fixed parent, always inactive
    conds: tuple[tuple[tuple[int, tuple[float, ...], tuple[bool, ...]], ...], ...] = ()

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
    return Dims(tuple(kinds), tuple(bins), tuple(cats), _conds_of(space, bins))


def _conds_of(space: Space, bins: list) -> tuple:
    """``Dims.conds``: each searched parameter's ``when=`` conditions as bin tables
    over its parents' coordinates."""
    if not space.conditional:
        return ()
    index = {name: j for j, name in enumerate(space.searched)}
    out = []
    for name in space.searched:
        conds = []
        for parent, allowed in space.conditions_of(name):
            q = space[parent]
            if isinstance(q, Fixed):
                value = q.value if q.numeric else 0
                if value not in allowed.tolist():
                    conds.append((-1, (), (False,)))
                continue
            j = index[parent]
            if isinstance(q, Int):
                edges, decoded = bins[j], np.arange(q.low, q.high + 1)
            else:  # Choice: k equal bins, decoded as the value or the index
                k = len(q.values)
                edges = tuple(np.linspace(0, 1, k + 1))
                decoded = np.asarray(q.values) if q.numeric else np.arange(k)
            table = tuple(bool(b) for b in np.isin(decoded, allowed))
            conds.append((j, tuple(float(e) for e in edges), table))
        out.append(tuple(conds))
    return tuple(out)


def _active(dims: Dims, x: jax.Array, i: int) -> jax.Array:
    """Whether point ``x`` uses dim ``i`` (its conditions and its parents' hold)."""
    a = jnp.asarray(True)
    for parent, edges, table in dims.conds[i] if dims.conds else ():
        if parent < 0:
            return jnp.asarray(False)
        e = jnp.asarray(edges)
        b = jnp.clip(
            jnp.searchsorted(e, x[parent], side="right") - 1, 0, len(edges) - 2
        )
        a = a & jnp.asarray(table)[b] & _active(dims, x, parent)
    return a


def _snap(u: jax.Array, edges: tuple[float, ...]) -> jax.Array:
    e = jnp.asarray(edges)
    i = jnp.clip(jnp.searchsorted(e, u, side="right") - 1, 0, len(edges) - 2)
    return 0.5 * (e[i] + e[i + 1])


def transform(dims: Dims, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One point ``x: [D]`` -> (numeric coordinates ``[Dn]``, category indices ``[Dc]``)."""

    def used(i: int, v: jax.Array, inactive: float) -> jax.Array:
        if not dims.conds or not dims.conds[i]:
            return v
        return jnp.where(_active(dims, x, i), v, inactive)

    num = []
    for i in dims.numeric:
        v = _snap(x[i], dims.bins[i]) if dims.kinds[i] in ("int", "ord") else x[i]
        num.append(used(i, v, INACTIVE_AT))
    cat = [
        used(i, jnp.clip(jnp.floor(x[i] * dims.n_cats[i]), 0, dims.n_cats[i] - 1), 0.0)
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
