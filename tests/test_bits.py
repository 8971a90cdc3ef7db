"""jaxhp.bits: dropout's hashed uniforms are uniform, unrelated across units, rows,
layers and steps, independent of padding, and the same under vmap."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxhp import bits


def _draws(n_keys=40, layers=3, rows=64, units=64):
    keys = jax.vmap(lambda t: jax.random.fold_in(jax.random.key(7), t))(
        jnp.arange(n_keys, dtype=jnp.uint32)
    )  # consecutive steps' keys, as the engine folds them in
    u = jax.vmap(lambda k: bits.uniforms(k, layers, rows, units))(keys)
    return np.asarray(u, np.float64)  # [keys, layers, rows, units]


def _chi2(counts):
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def _bound(dof):  # mean + 6 standard deviations of a chi-squared with dof degrees
    return dof + 6 * np.sqrt(2 * dof)


def test_uniforms_are_uniform_and_pairs_are_unrelated():
    u = _draws()
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 2e-3
    counts = np.histogram(u, bins=64, range=(0, 1))[0]
    assert _chi2(counts) < _bound(63)
    # Neighbours along each axis: the next step's key, layer, row and unit. A counter
    # put through a weak mix (or none) fails these at once.
    for axis in range(4):
        a = np.moveaxis(u, axis, 0)
        x, y = a[:-1].ravel(), a[1:].ravel()
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.01, axis
        joint = np.histogram2d(x, y, bins=8, range=[[0, 1], [0, 1]])[0]
        assert _chi2(joint) < _bound(63), axis
    # A dropout mask keeps its rate: 70% kept.
    assert abs((u < 0.7).mean() - 0.7) < 3e-3


def test_draws_do_not_depend_on_padding_and_match_under_vmap():
    key = jax.random.key(3)
    big = bits.uniforms(key, 4, 64, 32)
    np.testing.assert_array_equal(bits.uniforms(key, 2, 16, 8), big[:2, :16, :8])
    keys = jax.random.split(key, 5)
    batched = jax.vmap(lambda k: bits.uniforms(k, 2, 8, 8))(keys)
    for i in range(5):
        np.testing.assert_array_equal(batched[i], bits.uniforms(keys[i], 2, 8, 8))
    # Keys a bit apart draw unrelated numbers, not the same ones in another order.
    k0, k1 = bits.key_words(key)
    for other in ((k0 ^ 1, k1), (k0, k1 ^ 1), (k0 + 1, k1)):
        a = bits.row_seeds(k0, k1, jnp.uint32(0), jnp.arange(256, dtype=jnp.uint32))
        b = bits.row_seeds(*other, jnp.uint32(0), jnp.arange(256, dtype=jnp.uint32))
        assert not set(np.asarray(a).tolist()) & set(np.asarray(b).tolist())


def test_row_seeds_and_unit_uniforms_compose_to_uniforms():
    # What a kernel computes from the key's two words, piece by piece.
    key = jax.random.key(11)
    k0, k1 = bits.key_words(key)
    seed = bits.row_seeds(k0, k1, jnp.uint32(1), jnp.arange(8, dtype=jnp.uint32))
    got = bits.unit_uniforms(seed[:, None], jnp.arange(16, dtype=jnp.uint32)[None])
    np.testing.assert_array_equal(got, bits.uniforms(key, 2, 8, 16)[1])
