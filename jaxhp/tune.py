"""``tune()``: the round loop tying a strategy, the population engine and a stopper."""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxhp.engine import BestState, BucketReport, run_population
from jaxhp.results import Model, Results, Trial
from jaxhp.space import Space
from jaxhp.strategies import Strategy, make_strategy, resolve_n_trials
from jaxhp.tasks.base import Task

__all__ = ["tune"]


def check_positive_int(name: str, v: Any, *, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


def tune(
    task: Task,
    space: Space,
    strategy: str | Strategy = "random",
    *,
    n_trials: int | None = None,
    population: int = 128,
    seed: int = 0,
    early_stopping: Any = None,
    segment_epochs: int = 10,
    bucketing: str = "auto",
    strategy_options: Mapping[str, Any] | None = None,
    verbose: bool = False,
    callback: Callable[[list[Trial]], None] | None = None,
) -> Results:
    """Tune ``task``'s hyperparameters over ``space``, training populations of trials at once.

    Each round asks the strategy for up to ``population`` candidates, trains them all in
    one compiled program per shape bucket, and tells the strategy their best validation
    metric. Everything is validated before anything compiles.

    Args:
        task: a built-in task (``jaxhp.tasks.MLPClassifier``, ``MLPRegressor``) or a
            ``jaxhp.tasks.TrainableTask`` wrapping your own Trainable.
        space: the search space.
        strategy: ``"grid"``, ``"random"``, ``"sobol"``, ``"bayes"`` or a
            :class:`~jaxhp.Strategy`.
        n_trials: trials to run; ``None`` runs the whole grid (grid only).
        population: trials trained at once (per round).
        seed: seeds the strategy and every trial (trial ``i``'s key is
            ``fold_in(key(seed), i)``): same seed, same results, whatever ``population``.
        early_stopping: a stopper such as ``jaxhp.stopping.Patience(5)``, or ``None``.
        segment_epochs: epochs per compiled call; between calls the host checks whether a
            bucket is done and reports progress.
        bucketing: how trials are grouped into compiled programs: ``"auto"`` (default)
            merges power-of-two shape buckets where a cost model says a compile saved
            outweighs the padding added; ``"pow2"`` keeps one bucket per power-of-two
            width and batch size; ``"none"`` pads every trial to one program.
        strategy_options: keyword options of the strategy factory (grid: ``points``;
            bayes: ``n_initial``, ``acquisition_function``, ...).
        verbose: print a line per round.
        callback: called with each round's finished trials.

    Returns:
        :class:`~jaxhp.Results`.

    Example:
        >>> result = jaxhp.tune(task, space, "random", n_trials=64, population=32)
        >>> result.best_params, result.best_value
    """
    if not isinstance(task, Task):
        raise TypeError(
            f"task must be a jaxhp task (e.g. jaxhp.tasks.MLPClassifier), got {task!r}"
        )
    if not isinstance(space, Space):
        raise TypeError(f"space must be a jaxhp.Space, got {type(space).__name__}")
    task.check_space(space)
    check_positive_int("n_trials", n_trials, allow_none=True)
    check_positive_int("population", population)
    check_positive_int("segment_epochs", segment_epochs)
    if bucketing not in ("auto", "pow2", "none"):
        raise ValueError(
            f"bucketing must be 'auto', 'pow2' or 'none', got {bucketing!r}"
        )
    if not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if early_stopping is not None and not (
        hasattr(early_stopping, "init") and hasattr(early_stopping, "update")
    ):
        raise TypeError(
            f"early_stopping must be a stopper such as Patience(5), got {early_stopping!r}"
        )
    strat = make_strategy(strategy, space, **dict(strategy_options or {}))
    n_trials = resolve_n_trials(strat, n_trials)

    sign = 1.0 if task.direction == "maximize" else -1.0
    state = strat.init(jax.random.key(seed))
    trials: list[Trial] = []
    best: BestState | None = None
    buckets: list[BucketReport] = []
    started = 0
    t0 = time.perf_counter()
    rnd = 0
    while started < n_trials:
        n = min(population, n_trials - started)
        u, state = strat.ask(state, n)
        values = space.decode(u)
        hp = task.hparams(space, values)
        ids = np.arange(started, started + n)
        outcomes, reports, cand = run_population(
            task,
            hp,
            ids,
            seed=seed,
            stopper=early_stopping,
            segment_epochs=segment_epochs,
            bucketing=bucketing,
            best_so_far=best.value if best else -math.inf,
        )
        buckets.extend(reports)
        if cand is not None:
            best = cand
        new = [
            Trial(
                trial_id=o.trial_id,
                params=space.to_python(values, o.trial_id - started),
                value=o.value,
                status=o.status,
                epochs_run=o.epochs_run,
                best_epoch=o.best_epoch,
                wall_time=o.wall_time,
                round=rnd,
                fold_values=tuple(float(v) for v in o.fold_values),
                curves=o.curves,
            )
            for o in outcomes
        ]
        y = np.asarray([-sign * t.value if t.ok else np.nan for t in new])
        state = strat.tell(state, u, y)
        trials.extend(new)
        started += n
        if callback is not None:
            callback(new)
        if verbose:
            ok = [t.value for t in trials if t.ok]
            top = (max if sign > 0 else min)(ok) if ok else float("nan")
            div = sum(t.status == "diverged" for t in new)
            stp = sum(t.status == "stopped" for t in new)
            print(
                f"round {rnd}: {started}/{n_trials} trials, {len(reports)} buckets, "
                f"{stp} stopped, {div} diverged, best {task.metric}={top:.4f}, "
                f"{time.perf_counter() - t0:.1f}s",
                file=sys.stderr,
                flush=True,
            )
        rnd += 1
    elapsed = time.perf_counter() - t0
    stats = {
        "wall_time": elapsed,
        "compile_time": sum(r.compile_time for r in buckets),
        "programs_compiled": sum(r.compile_time > 0 for r in buckets),
        "buckets": len(buckets),
        "trials_per_second": len(trials) / elapsed if elapsed > 0 else math.inf,
        "strategy": strat.name,
    }
    model = Model(task, best) if best is not None else None
    return Results(
        trials, metric=task.metric, direction=task.direction, model=model, stats=stats
    )
