"""Acquisition functions and their maximisation over the unit cube.

- ``log_ei``: log expected improvement, computed stably far into the tail (Ament et al.
  2023, "Unexpected improvements to expected improvement").
- ``ucb``: upper confidence bound ``mean + beta * std``.
- ``maximize``: a large candidate sweep (quasi-random points plus perturbations of the
  best observations), then vmapped gradient refinement of the best starts.
- ``thompson``: a batch of ``q`` points, one per posterior sample. Samples are drawn by
  pathwise conditioning (Wilson et al. 2020): a random-Fourier-feature prior sample
  corrected by the exact posterior update, so each sample is a cheap function that can be
  maximised like any acquisition. Points are made distinct greedily.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxhp.gp.fit import GP, NOISE_FLOOR, predict
from jaxhp.gp.kernels import Dims, gram, transform

__all__ = ["log_ei", "ucb", "maximize", "thompson", "log_h"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def log_h(z: jax.Array) -> jax.Array:
    """``log(phi(z) + z * Phi(z))`` without cancellation (float64 recommended)."""
    log_phi = -0.5 * z * z - _LOG_SQRT_2PI
    direct = jnp.log(
        jnp.maximum(jnp.exp(log_phi) + z * jax.scipy.special.ndtr(z), 1e-300)
    )
    # For z < -1: phi(z) * (1 - |z| * sqrt(pi/2) * erfcx(|z| / sqrt(2))).
    zz = jnp.minimum(z, -1.0)
    w = -zz * math.sqrt(math.pi / 2) * jax.scipy.special.erfcx(-zz / math.sqrt(2))
    mid = log_phi + jnp.log1p(-jnp.minimum(w, 1.0 - 1e-16))
    # Far tail: phi(z) / z^2 * (1 - 3 / z^2 + 15 / z^4).
    tail = log_phi - 2.0 * jnp.log(-zz) + jnp.log1p(-3.0 / zz**2 + 15.0 / zz**4)
    return jnp.where(z > -1.0, direct, jnp.where(z > -20.0, mid, tail))


def log_ei(mean: jax.Array, var: jax.Array, best: jax.Array) -> jax.Array:
    """log E[max(f - best, 0)] for ``f ~ N(mean, var)`` (maximisation)."""
    std = jnp.sqrt(var)
    return jnp.log(std) + log_h((mean - best) / std)


def ucb(mean: jax.Array, var: jax.Array, beta: float = 2.0) -> jax.Array:
    return mean + beta * jnp.sqrt(var)


def _candidates(key, x, f, mask, n: int, d: int, top: int = 8):
    """Uniform points plus Gaussian perturbations of the ``top`` best observations."""
    k1, k2, k3 = jax.random.split(key, 3)
    uniform = jax.random.uniform(k1, (n // 2, d), x.dtype)
    order = jnp.argsort(jnp.where(mask, -f, jnp.inf))[:top]  # best first
    centres = x[order]  # [top, D]
    valid = mask[order]
    pick = jax.random.randint(k2, (n - n // 2,), 0, top)
    scale = jnp.exp(
        jax.random.uniform(k3, (n - n // 2, 1), x.dtype, jnp.log(1e-3), 0.0)
    )
    local = (
        centres[pick] + scale * jax.random.normal(k3, (n - n // 2, d), x.dtype) * 0.3
    )
    local = jnp.where(valid[pick][:, None], local, uniform[: n - n // 2])
    return jnp.clip(jnp.concatenate([uniform, local]), 0.0, 1.0)


def _refine(fn, x0: jax.Array, steps: int, lr: float = 0.01) -> jax.Array:
    """Projected gradient ascent of ``fn`` from each row of ``x0`` (vmapped)."""
    grad = jax.vmap(jax.grad(fn))

    def step(x, _):
        g = grad(x)
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        g = g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + 1e-12)
        return jnp.clip(x + lr * g, 0.0, 1.0), None

    x, _ = jax.lax.scan(step, x0, None, length=steps)
    return x


REFINES = ("gradient", "monotone")  # see maximize


def _refine_monotone(
    fn, x0: jax.Array, scale: jax.Array, steps: int, step0: float = 0.5
) -> jax.Array:
    """Monotone ascent of ``fn`` from each row of ``x0`` (vmapped), preconditioned by
    ``scale`` (the kernel's lengthscales): steps are taken in ``z = x / scale``, so a
    short-lengthscale direction is not under-resolved and a long one not over-stepped.
    A step is kept only if it improves ``fn``; the step length (in lengthscales) grows
    1.5x after a success and shrinks 0.3x after a failure, so each start converges to
    its local optimum within float precision in a few dozen steps."""
    grad = jax.vmap(jax.grad(fn))
    value = jax.vmap(fn)

    def step(carry, _):
        x, f, s = carry
        g = grad(x)
        g = jnp.where(jnp.isfinite(g), g, 0.0) * scale  # the gradient in z
        dx = g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + 1e-300) * scale
        x_new = jnp.clip(x + s[:, None] * dx, 0.0, 1.0)
        f_new = value(x_new)
        ok = f_new > f
        return (
            jnp.where(ok[:, None], x_new, x),
            jnp.where(ok, f_new, f),
            jnp.where(ok, s * 1.5, s * 0.3),
        ), None

    f0 = value(x0)
    f0 = jnp.where(jnp.isfinite(f0), f0, -jnp.inf)
    s0 = jnp.full(x0.shape[:1], step0, x0.dtype)
    (x, _, _), _ = jax.lax.scan(step, (x0, f0, s0), None, length=steps)
    return x


def maximize(
    dims: Dims,
    gp: GP,
    key: jax.Array,
    *,
    kind: str = "log_ei",
    n_candidates: int = 2048,
    n_starts: int = 16,
    steps: int = 50,
    beta: float = 2.0,
    refine: str = "gradient",
):
    """The maximiser of an acquisition (and its value) over the unit cube.

    ``refine="gradient"``: ``steps`` normalised gradient steps of fixed length from each
    start; ``"monotone"``: lengthscale-preconditioned monotone ascent (see
    :func:`_refine_monotone`), which converges to each start's local optimum."""
    d = gp.x.shape[1]
    best = jnp.max(jnp.where(gp.mask, gp.y, -jnp.inf))

    def acq(xs):
        m, v = predict(dims, gp, xs)
        return log_ei(m, v, best) if kind == "log_ei" else ucb(m, v, beta)

    cand = _candidates(key, gp.x, gp.y, gp.mask, n_candidates, d)
    vals = acq(cand)
    starts = cand[jnp.argsort(-vals)[:n_starts]]
    if refine == "monotone":
        scale = jnp.clip(jnp.exp(gp.params.log_lengthscale), 1e-4, 1.0)
        refined = _refine_monotone(lambda x: acq(x[None])[0], starts, scale, steps)
    else:
        refined = _refine(lambda x: acq(x[None])[0], starts, steps)
    all_x = jnp.concatenate([starts, refined])
    all_v = acq(all_x)
    i = jnp.argmax(jnp.where(jnp.isfinite(all_v), all_v, -jnp.inf))
    return all_x[i], all_v[i], all_x, all_v


def _rff(dims: Dims, gp: GP, key: jax.Array, m: int):
    """Random Fourier features of the kernel: ``phi(x) = sqrt(2 s / m) cos(W t(x) + b)``."""
    p = gp.params
    ls = jnp.exp(p.log_lengthscale)
    n_num, n_cat = len(dims.numeric), len(dims.categorical)
    onehot = sum(dims.n_cats[i] for i in dims.categorical)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    # Matérn-5/2: frequencies from a Student-t with 5 degrees of freedom.
    z = jax.random.normal(k1, (m, n_num), gp.x.dtype)
    chi2 = 2.0 * jax.random.gamma(k2, 2.5, (m, 1), gp.x.dtype)
    w_num = z * jnp.sqrt(5.0 / chi2)
    # Hamming part = a Gaussian kernel on one-hot codes with lengthscale sqrt(l_c).
    w_cat = jax.random.normal(k3, (m, onehot), gp.x.dtype)
    b = jax.random.uniform(k4, (m,), gp.x.dtype, 0.0, 2 * math.pi)
    ls_num = ls[jnp.asarray(dims.numeric, jnp.int32)] if n_num else ls[:0]
    cat_scale = []
    for i in dims.categorical:
        cat_scale += [jnp.sqrt(ls[i])] * dims.n_cats[i]
    cat_scale = jnp.stack(cat_scale) if n_cat else jnp.zeros((0,), gp.x.dtype)
    amp = jnp.sqrt(2.0 * jnp.exp(p.log_variance) / m)

    def features(x):  # [D] -> [m]
        num, cat = transform(dims, x)
        codes = [
            jax.nn.one_hot(cat[j].astype(jnp.int32), dims.n_cats[i], dtype=x.dtype)
            for j, i in enumerate(dims.categorical)
        ]
        oh = jnp.concatenate(codes) if codes else jnp.zeros((0,), x.dtype)
        proj = w_num @ (num / ls_num) + w_cat @ (oh / cat_scale)
        return amp * jnp.cos(proj + b)

    return features


def thompson(
    dims: Dims,
    gp: GP,
    key: jax.Array,
    q: int,
    *,
    n_candidates: int = 2048,
    n_features: int = 512,
    steps: int = 30,
    exclude: jax.Array | None = None,
):
    """``q`` distinct points, each the maximiser of one posterior sample."""
    d = gp.x.shape[1]
    k_rff, k_w, k_eps, k_c = jax.random.split(key, 4)
    phi = jax.vmap(_rff(dims, gp, k_rff, n_features))
    w = jax.random.normal(k_w, (n_features, q), gp.x.dtype)  # prior weights per sample
    noise = NOISE_FLOOR + jnp.exp(gp.params.log_noise)
    eps = jax.random.normal(k_eps, (gp.x.shape[0], q), gp.x.dtype) * jnp.sqrt(noise)
    prior_at_x = phi(gp.x) @ w  # [N, q]
    resid = jnp.where(gp.mask[:, None], gp.y[:, None] - prior_at_x - eps, 0.0)
    v = jax.scipy.linalg.cho_solve((gp.chol, True), resid)  # [N, q]

    def sample(xs):  # [C, D] -> [C, q]
        ks = jnp.where(gp.mask[None, :], gram(dims, gp.params, xs, gp.x), 0.0)
        return phi(xs) @ w + ks @ v

    cand = _candidates(k_c, gp.x, gp.y, gp.mask, n_candidates, d)
    if exclude is not None:
        cand = jnp.concatenate([exclude, cand])
    vals = sample(cand)  # [C, q]
    if exclude is not None:
        vals = vals.at[: exclude.shape[0]].set(-jnp.inf)

    def choose(taken, j):  # greedy: sample j takes its best candidate not yet taken
        col = jnp.where(taken, -jnp.inf, vals[:, j])
        i = jnp.argmax(col)
        return taken.at[i].set(True), i

    _, idx = jax.lax.scan(choose, jnp.zeros(cand.shape[0], bool), jnp.arange(q))
    starts = cand[idx]  # [q, D]

    def one(x, j):
        def f(z):
            ks = jnp.where(gp.mask, gram(dims, gp.params, z[None], gp.x)[0], 0.0)
            return phi(z[None])[0] @ w[:, j] + ks @ v[:, j]

        return _refine(f, x[None], steps)[0]

    refined = jax.vmap(one)(starts, jnp.arange(q))
    return starts, refined
