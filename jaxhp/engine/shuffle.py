"""Each trial's data order: a sort-free shuffle that XLA fuses.

A swap-or-not shuffle (Hoang, Morris and Rogaway, 2012) is a fixed number of
elementwise rounds, valid for a traced row count, with no sort and no data-dependent
loop; ``jax.random.permutation`` argsorts random keys, which costs several times more
per epoch of a small trial (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxhp.bits import mix32

__all__ = ["member_perm", "perm_from_bits", "shuffle_bits", "shuffle_rounds"]


def shuffle_rounds(size: int) -> int:
    """Rounds of the swap-or-not shuffle for ``size`` rows."""
    return max(24, 2 * math.ceil(math.log2(max(size, 2))) + 8)


def shuffle_bits(key: jax.Array, size: int) -> jax.Array:
    """The random words :func:`perm_from_bits` draws for a shuffle of ``size`` rows."""
    return jax.random.bits(key, (shuffle_rounds(size), 2), jnp.uint32)


def member_perm(key: jax.Array, n: jax.Array, size: int) -> jax.Array:
    """A shuffle of ``range(size)`` whose first ``n`` entries are the real rows (in a
    random order) and the rest the padding rows, in place (see :func:`perm_from_bits`).
    """
    return perm_from_bits(shuffle_bits(key, size), n, size)


def perm_from_bits(bits: jax.Array, n: jax.Array, size: int) -> jax.Array:
    """:func:`member_perm` from its random words (:func:`shuffle_bits`), which the
    engine draws for a whole segment's epochs at once.

    Each round draws ``k`` in ``[0, n)`` and a hash bit per pair ``{x, (k - x) mod n}``,
    and swaps the pairs whose bit is set. Every round is an involution of ``[0, n)``, so
    the result is a permutation for any (traced) ``n``. With :func:`shuffle_rounds`
    rounds the orderings of 3 and 5 rows come out uniform (chi-squared,
    ``tests/test_engine.py``).
    """
    rounds = bits.shape[0]
    x = jnp.arange(size, dtype=jnp.uint32)
    n = jnp.asarray(n).astype(jnp.uint32)
    ks = bits[:, 0] % n  # each round's k, computed once (not per row)
    real = x < n
    for r in range(rounds):
        k = ks[r]
        partner = jnp.where(x <= k, k - x, k + n - x)  # (k - x) mod n, for x < n
        flip = (mix32(jnp.maximum(x, partner) ^ bits[r, 1]) & 1) == 1
        x = jnp.where(real & flip, partner, x)
    return x.astype(jnp.int32)
