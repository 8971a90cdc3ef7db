"""GP model fitting: masked marginal likelihood with priors, restarts vmapped.

Observations sit in a fixed-capacity buffer ``x: [N, D]``, ``y: [N]`` with a validity mask,
so shapes do not change as trials accumulate (the capacity grows in powers of two). A
masked-out row becomes an isolated unit-variance point with target 0: it adds nothing to
the log-determinant or the quadratic term, so padding never changes the model.

Kernel hyperparameters are fitted by maximising the log marginal likelihood plus log
priors (MAP): lengthscales log-normal with the dimension-scaled location of Hvarfner et
al. (2024, "Vanilla Bayesian optimization performs great in high dimensions"), signal
variance log-normal around 1 (targets are standardised), noise log-normal around 1e-3
with a floor of 1e-6. Several restarts run as one vmapped Adam optimisation. Everything
here runs in float64 (see :func:`x64`), without switching the process to x64.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxhp.gp.kernels import Dims, KernelParams, gram

__all__ = [
    "GP",
    "fit_kernel",
    "posterior",
    "predict",
    "standardize",
    "x64",
    "NOISE_FLOOR",
]

NOISE_FLOOR = 1e-6
JITTER = 1e-8


def x64():
    """A context in which JAX computes in float64 (the process default is untouched)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    try:  # older JAX
        from jax.experimental import enable_x64

        return enable_x64()
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()


class GP(NamedTuple):
    """A fitted GP posterior over standardised targets."""

    params: KernelParams
    x: jax.Array  # [N, D]
    mask: jax.Array  # [N] bool
    chol: jax.Array  # [N, N] lower Cholesky factor of K + noise
    alpha: jax.Array  # [N] (K + noise)^-1 y
    y: jax.Array  # [N] standardised targets (0 where masked)


def standardize(
    y: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Standardise ``y`` over the valid rows; masked rows become 0."""
    n = jnp.maximum(jnp.sum(mask), 1)
    mean = jnp.sum(jnp.where(mask, y, 0.0)) / n
    var = jnp.sum(jnp.where(mask, jnp.square(y - mean), 0.0)) / n
    std = jnp.where(var > 1e-18, jnp.sqrt(var), 1.0)
    return jnp.where(mask, (y - mean) / std, 0.0), mean, std


def _noise(params: KernelParams) -> jax.Array:
    return NOISE_FLOOR + jnp.exp(params.log_noise)


def _cov(dims: Dims, params: KernelParams, x: jax.Array, mask: jax.Array) -> jax.Array:
    k = gram(dims, params, x, x)
    both = mask[:, None] & mask[None, :]
    k = jnp.where(both, k, 0.0)
    diag = jnp.where(mask, _noise(params) + JITTER * jnp.exp(params.log_variance), 1.0)
    return k + jnp.diag(diag)


def log_marginal_likelihood(dims, params, x, y, mask) -> jax.Array:
    chol = jnp.linalg.cholesky(_cov(dims, params, x, mask))
    alpha = jax.scipy.linalg.cho_solve((chol, True), y)
    n = jnp.sum(mask)
    return (
        -0.5 * jnp.dot(y, alpha)
        - jnp.sum(jnp.log(jnp.diagonal(chol)))
        - 0.5 * n * math.log(2 * math.pi)
    )


def _lengthscale_loc(d: int) -> float:
    # Hvarfner et al.'s sqrt(2) + log(D)/2, shifted by -log 4 because our inputs span
    # [0, 1] rather than being standardised.
    return math.sqrt(2.0) + 0.5 * math.log(max(d, 1)) - math.log(4.0)


def prior_mean(d: int) -> KernelParams:
    return KernelParams(
        log_lengthscale=jnp.full((d,), _lengthscale_loc(d)),
        log_variance=jnp.asarray(0.0),
        log_noise=jnp.asarray(math.log(1e-3)),
    )


def log_prior(params: KernelParams) -> jax.Array:
    loc = _lengthscale_loc(params.log_lengthscale.shape[0])
    lp = -0.5 * jnp.sum(jnp.square((params.log_lengthscale - loc) / math.sqrt(3.0)))
    lp += -0.5 * jnp.square(params.log_variance / 1.0)
    lp += -0.5 * jnp.square((params.log_noise - math.log(1e-3)) / 2.0)
    return lp


def fit_kernel(
    dims: Dims,
    x: jax.Array,
    y: jax.Array,
    mask: jax.Array,
    init: KernelParams,
    key: jax.Array,
    *,
    restarts: int = 4,
    steps: int = 100,
    learning_rate: float = 0.05,
) -> KernelParams:
    """MAP kernel hyperparameters from ``restarts`` starts (one is ``init``), vmapped."""

    def loss(p):
        val = -(log_marginal_likelihood(dims, p, x, y, mask) + log_prior(p))
        return jnp.where(jnp.isfinite(val), val, 1e10)

    d = init.log_lengthscale.shape[0]
    noise = jax.random.normal(key, (restarts, d + 2)) * 0.7
    noise = noise.at[0].set(0.0)  # restart 0 is the warm start
    mean = prior_mean(d)
    starts = KernelParams(
        log_lengthscale=jnp.where(
            jnp.arange(restarts)[:, None] == 0,
            init.log_lengthscale,
            mean.log_lengthscale,
        )
        + noise[:, :d],
        log_variance=jnp.where(jnp.arange(restarts) == 0, init.log_variance, 0.0)
        + noise[:, d],
        log_noise=jnp.where(jnp.arange(restarts) == 0, init.log_noise, mean.log_noise)
        + noise[:, d + 1],
    )
    opt = optax.adam(learning_rate)

    def run(p0):
        def step(carry, _):
            p, s = carry
            val, g = jax.value_and_grad(loss)(p)
            g = jax.tree.map(lambda a: jnp.where(jnp.isfinite(a), a, 0.0), g)
            upd, s = opt.update(g, s, p)
            p = optax.apply_updates(p, upd)
            p = p._replace(
                log_lengthscale=jnp.clip(p.log_lengthscale, -7.0, 5.0),
                log_variance=jnp.clip(p.log_variance, -6.0, 4.0),
                log_noise=jnp.clip(p.log_noise, -14.0, 1.0),
            )
            return (p, s), val

        (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)
        return p, loss(p)

    ps, vals = jax.vmap(run)(starts)
    best = jnp.argmin(vals)
    return jax.tree.map(lambda a: a[best], ps)


def posterior(dims: Dims, params: KernelParams, x, y, mask) -> GP:
    """Condition on the (standardised) observations."""
    chol = jnp.linalg.cholesky(_cov(dims, params, x, mask))
    alpha = jax.scipy.linalg.cho_solve((chol, True), y)
    return GP(params, x, mask, chol, alpha, y)


def predict(dims: Dims, gp: GP, xs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Posterior mean and variance of the latent function at ``xs: [C, D]``."""
    ks = jnp.where(gp.mask[None, :], gram(dims, gp.params, xs, gp.x), 0.0)  # [C, N]
    mean = ks @ gp.alpha
    v = jax.scipy.linalg.solve_triangular(gp.chol, ks.T, lower=True)  # [N, C]
    var = jnp.exp(gp.params.log_variance) - jnp.sum(jnp.square(v), axis=0)
    return mean, jnp.maximum(var, 1e-12)
