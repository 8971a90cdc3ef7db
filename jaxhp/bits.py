"""Random numbers from an integer hash, for the draws made in every training step.

``jax.random``'s threefry costs ~100 integer operations a 32-bit word. Dropout draws a
word for every unit of every row of every layer, every step. :func:`uniforms` costs ~10
operations a word: MurmurHash3's finaliser over a counter, seeded from the step's PRNG
key, as SplitMix does. Threefry's draws would take about half of a small MLP's step;
these take a tenth (benchmarks/investigations/dropout_cost.py times both; figures in
benchmarks/RESULTS.md).

A draw is a function of (key, layer, row, unit) alone, so it does not depend on a
bucket's padding, it is the same under ``jax.vmap``, and a hand-written kernel can
compute the very same words from the key's two words with its own integer ops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["key_words", "mix32", "row_seeds", "uniforms", "unit_uniforms"]

#: SplitMix's increment, the golden ratio's 32-bit fraction (odd: every unit of a row
#: gets its own counter).
GAMMA = 0x9E3779B9
#: A row's index takes the low bits of its counter, the layer the bits above.
ROW_BITS = 16


def mix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a fast bijective mix of a ``uint32`` array."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two ``uint32`` words of a PRNG key's data (its first and last): the seed of the
    draws below, also what a kernel is handed instead of the key."""
    data = jax.random.key_data(key)
    return data[..., 0], data[..., -1]


def row_seeds(k0: jax.Array, k1: jax.Array, layer: jax.Array, row: jax.Array):
    """Each (layer, row)'s seed: the key's words hashed into one, then stepped by the
    row's counter ``layer * 2**16 + row`` and hashed again. (The key is hashed first so
    that keys a bit apart give unrelated seeds: mixing the counter with a raw key word
    would give them the same seeds in another order.)"""
    base = mix32(k0 ^ mix32(k1))
    counter = (layer.astype(jnp.uint32) << ROW_BITS) + row.astype(jnp.uint32)
    return mix32(base + counter * jnp.uint32(GAMMA))


def unit_uniforms(seed: jax.Array, unit: jax.Array) -> jax.Array:
    """Uniforms in ``[0, 1)`` (24 bits, float32) for ``unit`` of the rows seeded
    ``seed`` (broadcast against each other)."""
    x = mix32(seed + unit.astype(jnp.uint32) * jnp.uint32(GAMMA))
    return (x >> 8).astype(jnp.int32).astype(jnp.float32) * (1.0 / (1 << 24))


def uniforms(key: jax.Array, layers: int, rows: int, units: int) -> jax.Array:
    """``[layers, rows, units]`` uniforms in ``[0, 1)`` for one step's ``key``."""
    k0, k1 = key_words(key)
    layer = jnp.arange(layers, dtype=jnp.uint32)[:, None, None]
    row = jnp.arange(rows, dtype=jnp.uint32)[None, :, None]
    unit = jnp.arange(units, dtype=jnp.uint32)[None, None, :]
    return unit_uniforms(row_seeds(k0, k1, layer, row), unit)
