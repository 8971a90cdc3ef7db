"""``optimize()``: any strategy on a black-box function of a population of configurations."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhp.results import Results, Trial
from jaxhp.space import Choice, Space
from jaxhp.strategies import Strategy, make_strategy
from jaxhp.sweep import Deadline, check_positive_int, check_timeout, enqueued_first

__all__ = ["optimize"]


def _caller(
    fn: Callable, space: Space
) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """Call ``fn`` jitted when it traces, as plain NumPy code otherwise."""
    has_strings = any(isinstance(p, Choice) and not p.numeric for p in space.values())
    jitted = None if has_strings else jax.jit(fn)
    mode = {"jit": jitted is not None}

    def call(values: dict[str, np.ndarray]) -> np.ndarray:
        if mode["jit"]:
            try:
                return np.asarray(
                    jitted({k: jnp.asarray(v) for k, v in values.items()})
                )
            except (
                jax.errors.JAXTypeError,
                TypeError,
                jax.errors.ConcretizationTypeError,
            ):
                mode["jit"] = False  # not traceable: call it as it is from now on
        return np.asarray(fn(values))

    return call


def optimize(
    fn: Callable[[dict[str, Any]], Any],
    space: Space,
    strategy: str | Strategy = "bayes",
    *,
    n_trials: int | None = None,
    population: int = 1,
    seed: int = 0,
    direction: str = "minimize",
    strategy_options: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    enqueue: Sequence[Mapping[str, Any]] | None = None,
) -> Results:
    """Optimise a black-box function with any strategy, a population at a time.

    Args:
        fn: maps ``{name: [P] array}`` to ``[P]`` objective values. A function JAX can
            trace is jitted; anything else (NumPy, a simulator) is called as it is. String
            choices arrive as arrays of strings (and make the call plain NumPy).
        space: the search space.
        strategy: ``"bayes"`` (default), ``"sobol"``, ``"random"``, ``"grid"`` or a
            :class:`~jaxhp.Strategy`.
        n_trials: evaluations in all (``None``: the whole grid, grid only).
        population: evaluations per round (the batch size ``q`` proposed at once).
        seed: seeds the strategy.
        direction: ``"minimize"`` or ``"maximize"``.
        timeout: seconds after which no round starts (the one under way finishes; at
            least one runs), as :func:`jaxhp.tune`'s; ``stats["timed_out"]`` says
            whether it ended the run.
        enqueue: configurations to evaluate first, as :func:`jaxhp.tune`'s.

    Returns:
        :class:`~jaxhp.Results` (status ``failed`` for non-finite values).

    Example:
        >>> res = jaxhp.optimize(lambda p: (p["x"] - 0.3) ** 2,
        ...                      jaxhp.Space(x=jaxhp.Float(0, 1)), n_trials=20)
    """
    if not isinstance(space, Space):
        raise TypeError(f"space must be a jaxhp.Space, got {type(space).__name__}")
    if direction not in ("minimize", "maximize"):
        raise ValueError(
            f"direction must be 'minimize' or 'maximize', got {direction!r}"
        )
    check_positive_int("population", population)
    check_positive_int("n_trials", n_trials, allow_none=True)
    check_timeout(timeout)
    strat = make_strategy(strategy, space, **dict(strategy_options or {}))
    strat, n_trials, _ = enqueued_first(strat, space, enqueue, n_trials)
    sign = 1.0 if direction == "minimize" else -1.0
    call = _caller(fn, space)
    state = strat.init(jax.random.key(seed))
    trials: list[Trial] = []
    t0 = time.perf_counter()
    clock = Deadline(timeout, t0)
    done, rnd = 0, 0
    while done < n_trials and (rnd == 0 or not clock.passed()):
        n = min(population, n_trials - done)
        u, state = strat.ask(state, n)
        values = space.decode(space.canonical(u))  # inactive parameters at a constant
        native = {
            k: (
                np.asarray(space[k].values, dtype=object)[v]
                if isinstance(space[k], Choice) and not space[k].numeric
                else v
            )
            for k, v in values.items()
        }
        t_call = time.perf_counter()
        y = np.asarray(call(native), np.float64).reshape(-1)
        wall = time.perf_counter() - t_call
        if y.shape != (n,):
            raise ValueError(f"fn returned {y.shape[0]} values for a population of {n}")
        state = strat.tell(state, u, np.where(np.isfinite(y), sign * y, np.nan))
        params = space.to_python_all(values)
        for i in range(n):
            ok = math.isfinite(y[i])
            trials.append(
                Trial(
                    trial_id=done + i,
                    params=params[i],
                    value=float(y[i]) if ok else math.nan,
                    status="complete" if ok else "failed",
                    epochs_run=0,
                    best_epoch=-1,
                    wall_time=wall,
                    round=rnd,
                    fold_values=(),
                    curves={},
                )
            )
        done += n
        rnd += 1
    elapsed = time.perf_counter() - t0
    stats = {
        "wall_time": elapsed,
        "strategy": strat.name,
        "trials_per_second": len(trials) / elapsed if elapsed > 0 else math.inf,
        "timed_out": clock.fired,
    }
    return Results(
        trials, metric="value", direction=direction, stats=stats, space=space
    )
