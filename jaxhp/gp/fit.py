"""GP model fitting: masked marginal likelihood with priors, restarts vmapped.

Observations sit in a fixed-capacity buffer ``x: [N, D]``, ``y: [N]`` with a validity mask,
so shapes do not change as trials accumulate (the capacity grows in powers of two). A
masked-out row becomes an isolated unit-variance point with target 0: it adds nothing to
the log-determinant or the quadratic term, so padding never changes the model.

Kernel hyperparameters are fitted by maximising the log marginal likelihood plus log
priors (MAP): lengthscales log-normal with the dimension-scaled location of Hvarfner et
al. (2024, "Vanilla Bayesian optimization performs great in high dimensions"), signal
variance log-normal around 1 (targets are standardised), noise log-normal around 1e-3
with a floor of 1e-6. Several restarts run as one vmapped L-BFGS (or Adam) optimisation.
Everything here runs in float64 (see :func:`x64`), without switching the process to x64.
"""

from __future__ import annotations

import contextlib
import functools
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


def log_prior_optuna(params: KernelParams) -> jax.Array:
    """Optuna's GPSampler priors (v4-5, ``optuna/_gp/prior.py``), on the same parameters:
    ``-(0.1 / lam + 0.1 lam)`` on each inverse squared lengthscale ``lam`` (mode at a
    lengthscale of 1), Gamma(2, 1) on the signal variance and Gamma(1.1, 30) on the noise
    variance."""
    lam = jnp.exp(-2.0 * params.log_lengthscale)
    var = jnp.exp(params.log_variance)
    noise = _noise(params)
    return (
        -jnp.sum(0.1 / lam + 0.1 * lam)
        + (jnp.log(var) - var)
        + (0.1 * jnp.log(noise) - 30.0 * noise)
    )


PRIORS = {"default": log_prior, "optuna": log_prior_optuna}
FIT_METHODS = ("adam", "lbfgs")


def _clip(p: KernelParams) -> KernelParams:
    """Kernel hyperparameters kept in a numerically safe box."""
    return p._replace(
        log_lengthscale=jnp.clip(p.log_lengthscale, -7.0, 5.0),
        log_variance=jnp.clip(p.log_variance, -6.0, 4.0),
        log_noise=jnp.clip(p.log_noise, -14.0, 1.0),
    )


def _finite(tree):
    """``tree`` with non-finite entries set to 0 (a gradient step that cannot blow up)."""
    return jax.tree.map(lambda a: jnp.where(jnp.isfinite(a), a, 0.0), tree)


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
    method: str = "adam",
    gtol: float = 1e-3,
    prior: str = "default",
    restart_map: str = "auto",
) -> KernelParams:
    """MAP kernel hyperparameters from ``restarts`` starts (one is ``init``), vmapped
    (for L-BFGS on a CPU: one after another, see below).

    ``method="adam"`` takes ``steps`` Adam steps; ``"lbfgs"`` takes ``steps`` L-BFGS
    iterations with a zoom line search (optax), which converge to the optimum's
    neighbourhood rather than walking towards it, and keeps a restart's last finite
    iterate if a step goes wrong.

    ``restart_map``: how the restarts run: ``"vmap"`` (together), ``"map"`` (one after
    another, ``lax.map``), or ``"auto"``: ``"map"`` for L-BFGS on a CPU, else ``"vmap"``.
    """

    lp = PRIORS[prior]

    def loss(p):
        val = -(log_marginal_likelihood(dims, p, x, y, mask) + lp(p))
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
            g = _finite(g)
            upd, s = opt.update(g, s, p)
            p = optax.apply_updates(p, upd)
            p = _clip(p)
            return (p, s), val

        (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)
        return p, loss(p)

    def run_lbfgs(p0):
        lbfgs = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(loss)

        def step(carry):
            i, p, s, _ = carry
            val, g = value_and_grad(p, state=s)
            g = _finite(g)
            upd, s_new = lbfgs.update(g, s, p, value=val, grad=g, value_fn=loss)
            p_new = optax.apply_updates(p, upd)
            ok = jnp.all(
                jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(p_new)])
            )
            keep = functools.partial(jnp.where, ok)
            gnorm = (
                optax.tree.norm(g) if hasattr(optax, "tree") else optax.global_norm(g)
            )
            return (
                i + 1,
                jax.tree.map(keep, p_new, p),
                jax.tree.map(keep, s_new, s),
                jnp.where(ok, gnorm, 0.0),
            )

        # Until the gradient is small (a line search on a converged point only burns
        # time) or ``steps`` iterations.
        _, p, _, _ = jax.lax.while_loop(
            lambda c: (c[0] < steps) & (c[3] > gtol),
            step,
            (
                jnp.int32(0),
                p0,
                lbfgs.init(p0),
                jnp.asarray(jnp.inf, p0.log_variance.dtype),
            ),
        )
        p = _clip(p)
        return p, loss(p)

    if method not in FIT_METHODS:
        raise ValueError(f"method must be one of {FIT_METHODS}, got {method!r}")
    if restart_map not in ("auto", "vmap", "map"):
        raise ValueError(
            f"restart_map must be 'auto', 'vmap' or 'map', got {restart_map!r}"
        )
    if restart_map == "auto":
        # One L-BFGS restart after another on a CPU. A vmapped while_loop iterates until
        # the slowest restart converges (line searches included), and batched float64
        # Cholesky gradients are slower there than one at a time, so mapping the
        # restarts fits about 3x faster (benchmarks/RESULTS.md). Adam's fixed step
        # count gains nothing from mapping: it stays vmapped.
        cpu = jax.default_backend() == "cpu"
        restart_map = "map" if method == "lbfgs" and cpu else "vmap"
    one = run_lbfgs if method == "lbfgs" else run
    if restart_map == "map":
        ps, vals = jax.lax.map(one, starts)
    else:
        ps, vals = jax.vmap(one)(starts)
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
