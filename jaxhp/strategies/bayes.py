"""Bayesian optimisation with a GP surrogate that proposes whole batches.

After an initial design (uniform random or scrambled Sobol points, see below), each
``ask`` fits the GP (``jaxhp.gp``) to every result told so far and proposes ``q`` points:

- the first maximises log expected improvement (or UCB), found by a large candidate sweep
  plus vmapped monotone refinement;
- the other ``q - 1`` come from Thompson sampling: one pathwise posterior sample per
  point, each maximised over a shared candidate pool, taken greedily so that no two are
  the same. Sampling spreads a batch where the posterior is uncertain and costs one
  posterior update for the whole batch, so ``q`` can be in the thousands.

By default the values are log-warped (see :func:`warp`) for the model behind the first
point only; the Thompson samples condition on the plain values under the same kernel.
Why the split: the warp keeps a few very bad values from setting the model's scale,
which helps the expected-improvement point (level with Optuna's GPSampler on Branin at
q = 1), while Thompson samples drawn from a warped model explore worse; warping the
whole batch, or nothing, scored behind on Branin at q = 8 (``benchmarks/RESULTS.md``).

Points asked but not yet told (pending) enter the model at their posterior mean (kriging
believer), so a new batch avoids them. Trials that failed or diverged (NaN) are given the
worst value seen so far: they never look attractive and never poison the fit.

Which initial design (``initial_design="auto"``, the default): uniform random points when
the first batch is small (under ``SOBOL_FROM`` points), scrambled Sobol when it is large.
Why: after a small Sobol design both this strategy and Optuna's GPSampler more often
stay in Hartmann6's second-best basin than after a random one of the same size (a
likely reason: evenly spread points have no close pairs, so the first fits see no
short-range correlation, settle on long lengthscales and exploit the first good basin);
with a first batch of 64 the Sobol design came out ahead on all three test functions
(``benchmarks/RESULTS.md``).
``"random"`` and ``"sobol"`` force one.

Observations live in a buffer whose capacity grows in powers of two with a validity mask,
so the GP compiles once per capacity bucket, not once per round. Kernel hyperparameters
are fitted on at most ``fit_subset`` observations (a random subset beyond that), then the
posterior conditions on all of them.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxhp.gp import acquisition
from jaxhp.gp import fit as gpfit
from jaxhp.gp.kernels import Dims, KernelParams, dims_of
from jaxhp.space import Space, SpaceError
from jaxhp.strategies.base import Strategy
from jaxhp.strategies.random import _points
from jaxhp.strategies.sobol import _sobol_points
from jaxhp.tasks.base import next_pow2

__all__ = ["gp_bo"]


class BayesState(NamedTuple):
    key: jax.Array
    seed: int  # seed of the initial design
    count: int  # points asked so far
    x: np.ndarray  # [n, D] told points
    y: np.ndarray  # [n] told values (to minimise; NaN = failed)
    pending: np.ndarray  # [m, D] asked, not told yet
    params: Any  # last fitted KernelParams (warm start), or None
    design: str = ""  # "random" or "sobol", fixed at the first ask ("" before it)


#: ``initial_design="auto"``: a first batch of at least this many points gets a Sobol
#: design, a smaller one a random design (see the module docstring).
SOBOL_FROM = 32


def default_n_initial(d: int) -> int:
    """Initial-design points before the GP takes over, for ``d`` dimensions."""
    return max(10, d + 1)


def _capacity(n: int, minimum: int = 16) -> int:
    return max(minimum, next_pow2(n))


def _padded(rows: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` zero-padded to ``cap`` rows, and the mask of the real ones."""
    out = np.zeros((cap, *rows.shape[1:]))
    out[: len(rows)] = rows
    return out, np.arange(cap) < len(rows)


@functools.cache
def _programs(
    dims: Dims,
    acq: str,
    restarts: int,
    steps: int,
    fit_method: str,
    refine: str,
    refine_steps: int,
    prior: str,
):
    """Jitted GP programs for ``dims`` (shapes specialise per capacity and batch)."""

    @jax.jit
    def fit_and_condition(key, x, y, mask, fx, fy, fmask, init):
        ys, _, _ = gpfit.standardize(y, mask)
        fys, _, _ = gpfit.standardize(fy, fmask)
        params = gpfit.fit_kernel(
            dims,
            fx,
            fys,
            fmask,
            init,
            key,
            restarts=restarts,
            steps=steps,
            method=fit_method,
            prior=prior,
        )
        return params, gpfit.posterior(dims, params, x, ys, mask)

    @jax.jit
    def condition(params, x, y, mask):
        """The posterior of other targets under the same kernel."""
        ys, _, _ = gpfit.standardize(y, mask)
        return gpfit.posterior(dims, params, x, ys, mask)

    @jax.jit
    def believe(gp, x, y_std, mask, px, pmask):
        """Add pending points at their posterior mean (kriging believer)."""
        mean, _ = gpfit.predict(dims, gp, px)
        n = x.shape[0]
        slots = jnp.cumsum(pmask) - 1 + jnp.sum(mask)
        slots = jnp.where(pmask, slots, n)  # out of range: dropped
        x = x.at[slots].set(px, mode="drop")
        y_std = y_std.at[slots].set(mean, mode="drop")
        mask = mask.at[slots].set(True, mode="drop")
        return gpfit.posterior(dims, gp.params, x, y_std, mask)

    @functools.partial(jax.jit, static_argnums=(3,))
    def propose(gp, gp_batch, key, q):
        """The log-EI (or UCB) maximiser of ``gp``, then ``q - 1`` Thompson samples of
        ``gp_batch``."""
        k1, k2 = jax.random.split(key)
        first, _, _, _ = acquisition.maximize(
            dims, gp, k1, kind=acq, refine=refine, steps=refine_steps
        )
        if q == 1:
            return first[None], first[None]
        starts, refined = acquisition.thompson(
            dims, gp_batch, k2, q - 1, exclude=first[None]
        )
        return (
            jnp.concatenate([first[None], starts]),
            jnp.concatenate([first[None], refined]),
        )

    return fit_and_condition, condition, believe, propose


def gp_bo(
    space: Space,
    *,
    n_initial: int | None = None,
    initial_design: str = "auto",
    acquisition_function: str = "log_ei",
    restarts: int = 4,
    fit_steps: int = 100,
    fit_subset: int = 256,
    fit_method: str = "lbfgs",
    refine: str = "monotone",
    refine_steps: int = 50,
    prior: str = "default",
    output_warp: str = "log_first",
) -> Strategy:
    """GP-based Bayesian optimisation over ``space`` with batch proposals.

    Args:
        space: the search space.
        n_initial: initial-design points before the GP takes over (default
            ``max(10, D + 1)``; a whole first batch when the population is larger).
        initial_design: ``"auto"`` (random for a first batch under ``SOBOL_FROM``
            points, Sobol from there: see the module docstring), ``"random"`` (uniform)
            or ``"sobol"`` (scrambled Sobol).
        acquisition_function: ``"log_ei"`` or ``"ucb"`` for the first point of a batch.
        restarts: kernel-fit restarts (vmapped; for L-BFGS on a CPU, one after
            another).
        fit_steps: iterations per kernel fit (at most, for L-BFGS).
        fit_subset: at most this many observations are used to fit the kernel.
        fit_method: ``"lbfgs"`` (to convergence) or ``"adam"`` (``fit_steps`` steps);
            see :func:`jaxhp.gp.fit.fit_kernel`.
        refine: how the acquisition's best starts are refined: ``"monotone"`` or
            ``"gradient"`` (see :func:`jaxhp.gp.acquisition.maximize`).
        refine_steps: refinement steps per start.
        prior: kernel hyperparameter priors: ``"default"`` (see :mod:`jaxhp.gp.fit`) or
            ``"optuna"`` (Optuna's GPSampler's, for comparisons).
        output_warp: a monotone transform of the values before they are standardised
            (see :func:`warp`). ``"log_first"``: the log warp for the model behind each
            batch's first (log-EI) point, none for its Thompson samples (same kernel);
            ``"log"``: for both; ``"none"``.

    Example:
        >>> strategy = gp_bo(space)
        >>> jaxhp.tune(task, space, strategy, n_trials=64, population=8)
    """
    _check_options(
        space,
        acquisition_function,
        initial_design,
        fit_method,
        refine,
        prior,
        output_warp,
    )
    dims = dims_of(space)
    d = space.dim
    n_init = default_n_initial(d) if n_initial is None else int(n_initial)
    model = _Model(
        dims,
        acquisition_function,
        restarts,
        fit_steps,
        fit_subset,
        fit_method,
        refine,
        refine_steps,
        prior,
        output_warp,
    )

    def design(kind: str, seed: int, start: int, n: int) -> np.ndarray:
        if kind == "sobol":
            return _sobol_points(d, seed, start, n)
        # Point i of the random stream depends on i alone (as in random search).
        ids = np.arange(start, start + next_pow2(n), dtype=np.uint32)
        return np.asarray(_points(jax.random.key(seed), ids, d), np.float64)[:n]

    def init(key: jax.Array) -> BayesState:
        k1, k2 = jax.random.split(key)
        seed = int(jax.random.randint(k1, (), 0, 2**31 - 1))
        return BayesState(
            k2, seed, 0, np.zeros((0, d)), np.zeros(0), np.zeros((0, d)), None
        )

    def snap(u: np.ndarray) -> np.ndarray:
        """Each point at the centre of its configuration's cell, inactive parameters
        at their constant: one configuration, one point."""
        return space.canonical(space.encode(space.decode(u)))

    def ask(state: BayesState, n: int) -> tuple[np.ndarray, BayesState]:
        key, sub = jax.random.split(state.key)
        valid = np.isfinite(state.y)
        if d == 0 or valid.sum() < n_init:
            kind = state.design  # fixed at the first ask, for the whole design
            if not kind:
                kind = initial_design
                if kind == "auto":
                    kind = "sobol" if n >= SOBOL_FROM else "random"
            u = space.canonical(design(kind, state.seed, state.count, n))
            state = state._replace(design=kind)
            params = state.params
        else:
            u, params = _gp_ask(model, space, state, sub, n)
        state = state._replace(
            key=key,
            count=state.count + n,
            pending=np.concatenate([state.pending, u]),
            params=params,
        )
        return u, state

    def tell(state: BayesState, u: np.ndarray, y: np.ndarray) -> BayesState:
        u = np.asarray(u, np.float64).reshape(-1, d)
        pending = state.pending
        for row in u:  # drop told points from the pending list
            hit = np.flatnonzero(np.all(np.isclose(pending, row), axis=1))
            if len(hit):
                pending = np.delete(pending, hit[0], axis=0)
        return state._replace(
            x=np.concatenate([state.x, u]),
            y=np.concatenate([state.y, np.asarray(y, np.float64)]),
            pending=pending,
        )

    return Strategy(init=init, ask=ask, tell=tell, name="bayes")


class _Model(NamedTuple):
    """The surrogate's settings (see :func:`gp_bo`'s arguments)."""

    dims: Any
    acquisition_function: str
    restarts: int
    fit_steps: int
    fit_subset: int
    fit_method: str
    refine: str
    refine_steps: int
    prior: str
    output_warp: str


def _check_options(
    space, acquisition_function, initial_design, fit_method, refine, prior, output_warp
) -> None:
    """Raise naming the option that :func:`gp_bo` cannot take."""
    if acquisition_function not in ("log_ei", "ucb"):
        raise ValueError(
            f"acquisition_function must be 'log_ei' or 'ucb', "
            f"got {acquisition_function!r}"
        )
    if initial_design not in ("auto", "random", "sobol"):
        raise ValueError(
            "initial_design must be 'auto', 'random' or 'sobol', "
            f"got {initial_design!r}"
        )
    for name, value, allowed in (
        ("fit_method", fit_method, gpfit.FIT_METHODS),
        ("refine", refine, acquisition.REFINES),
        ("prior", prior, tuple(gpfit.PRIORS)),
        ("output_warp", output_warp, WARPS),
    ):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if space.dim == 0:
        raise SpaceError(
            "the bayes strategy needs a parameter to search, and this space has only "
            "Fixed values (the random strategy repeats a configuration with new seeds)"
        )


def _gp_ask(m: _Model, space: Space, state: BayesState, key: jax.Array, q: int):
    """The GP's batch of ``q`` points: fit the kernel, condition, believe the
    pending points, propose (first point by the acquisition, the rest Thompson
    samples), snap each to its configuration and keep them distinct."""
    d = space.dim
    fit_prog, condition, believe, propose = _programs(
        m.dims,
        m.acquisition_function,
        m.restarts,
        m.fit_steps,
        m.fit_method,
        m.refine,
        m.refine_steps,
        m.prior,
    )
    f = -state.y  # the GP maximises
    worst = np.nanmin(f)
    f_raw = np.where(np.isfinite(f), f, worst)  # failures: the worst value seen
    f = warp(f_raw, m.output_warp.removesuffix("_first"))
    # "*_first": the warp shapes the first point's model only; the batch's
    # Thompson samples come from the unwarped values under the same kernel.
    split = m.output_warp.endswith("_first") and q > 1
    n = len(f)
    cap = _capacity(n + len(state.pending))
    x, mask = _padded(state.x, cap)
    y, _ = _padded(f, cap)
    rng = np.random.default_rng(state.count)
    sub = np.sort(rng.choice(n, min(n, m.fit_subset), replace=False))
    fx, fmask = _padded(state.x[sub], _capacity(len(sub)))
    fy, _ = _padded(f[sub], _capacity(len(sub)))
    init = state.params if state.params is not None else gpfit.prior_mean(d)
    # float64 always: the prior mean is built as float32 outside the x64 context,
    # and a first round fed float32 would compile the fit a second time.
    init = jax.tree.map(lambda a: np.asarray(a, np.float64), init)
    k_fit, k_prop = jax.random.split(key)
    with gpfit.x64():
        params, gp = fit_prog(k_fit, x, y, mask, fx, fy, fmask, init)
        gp_batch = gp
        if split:
            gp_batch = condition(params, x, _padded(f_raw, cap)[0], mask)
        if len(state.pending):
            px, pmask = _padded(state.pending, _capacity(len(state.pending), 1))
            gp = believe(gp, x, gp.y, mask, px, pmask)
            gp_batch = (
                believe(gp_batch, x, gp_batch.y, mask, px, pmask) if split else gp
            )
        # Batches are proposed in power-of-two sizes (the first q kept: the best
        # log-EI point, then Thompson samples in order), so a stream of varying
        # batch sizes (slot recycling) compiles a handful of programs.
        starts, refined = propose(gp, gp_batch, k_prop, next_pow2(q))
        starts, refined = np.asarray(starts)[:q], np.asarray(refined)[:q]
        params = jax.tree.map(np.asarray, params)

    def snap(u: np.ndarray) -> np.ndarray:
        return space.canonical(space.encode(space.decode(u)))

    u = _distinct(
        snap(refined),
        snap(starts),
        np.concatenate([state.x, state.pending]),
        key,
        d,
        space.canonical,
    )
    return u, KernelParams(*params)


WARPS = ("none", "log", "log_first")


def warp(f: np.ndarray, kind: str) -> np.ndarray:
    """Values to maximise, transformed monotonically (their order is kept).

    ``"log"``: ``-log1p(gap / s)`` of each value's gap to the best one, ``s`` the
    median gap. Near the best values it is linear (their differences keep their
    ratios); far from them logarithmic, so a few very bad values no longer set the
    scale of the standardised targets. ``gp_bo`` applies it to the model behind each
    batch's first point (``output_warp="log_first"``, see the module docstring)."""
    if kind == "none" or len(f) < 2:
        return f
    gap = np.max(f) - f
    s = np.median(gap)
    return -np.log1p(gap / s) if s > 0 else f


def _distinct(
    refined: np.ndarray,
    starts: np.ndarray,
    seen: np.ndarray,
    key: jax.Array,
    d: int,
    canonical=lambda u: u,
) -> np.ndarray:
    """Rows of ``refined`` made distinct from each other and from ``seen``: a duplicate
    falls back to its unrefined start, then to a uniform random point (put in
    ``canonical`` form, as the others are)."""
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    taken = {tuple(np.round(r, 9)) for r in seen}
    out = []
    for r, s in zip(refined, starts, strict=True):
        for cand in (r, s, *canonical(rng.random((8, d)))):
            t = tuple(np.round(cand, 9))
            if t not in taken:
                break
        taken.add(t)
        out.append(cand)
    return np.asarray(out)
