"""Population-based training (Jaderberg et al. 2017) inside one compiled population.

Every member trains in the population's compiled program. Every ``interval`` epochs
(one segment), the members are ranked by their current validation metric; each member in
the bottom ``quantile`` *exploits* a member drawn from the top ``quantile`` — its
parameters, optimizer state and best-so-far record are replaced by the source's (a gather
along the population axis on the device, exact to the bit) — and *explores*: it takes
the source's hyperparameters, multiplies each continuous one by a factor drawn from
``perturb`` (clipped to the space) or, with probability ``resample_probability``,
redraws it from the space; choices are redrawn with that probability. A member keeps its
own PRNG key, so its data order stays its own. Learning rates and the other continuous
hyperparameters therefore follow schedules, recorded per epoch in each trial's curves,
and every exploit is recorded in ``Results.lineage``.

Shape hyperparameters (``n_layers``, ``width``, ``batch_size``) must be fixed: exploiting
copies weights between members. ``epochs`` is ``generations * interval``.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxhp.engine import BestState, Population
from jaxhp.results import Model, Results, Trial
from jaxhp.space import Choice, Fixed, Float, Int, Space
from jaxhp.sweep import check_positive_int
from jaxhp.tasks.base import Task

__all__ = ["Exploit", "pbt"]

SHAPE_PARAMS = ("n_layers", "width", "batch_size", "epochs")


@dataclass(frozen=True)
class Exploit:
    """One exploit-and-explore step: ``trial`` copied ``source`` at ``epoch``."""

    generation: int
    epoch: int  # epochs trained when the copy happened
    trial: int
    source: int
    value: float  # the trial's metric before the copy
    source_value: float
    params_before: dict[str, Any]
    params_after: dict[str, Any]


def pbt(
    task: Task,
    space: Space,
    *,
    population: int = 32,
    generations: int = 10,
    interval: int = 2,
    quantile: float = 0.25,
    perturb: tuple[float, float] = (0.8, 1.2),
    resample_probability: float = 0.25,
    seed: int = 0,
    verbose: bool = False,
    _on_exploit: Any = None,
) -> Results:
    """Population-based training of ``population`` members for ``generations`` rounds.

    Returns a :class:`~jaxhp.Results` with one trial per member: its final
    hyperparameters, its metric at the last epoch (its value), its curves (the metric,
    the loss and each searched continuous hyperparameter per epoch) and, in
    ``results.lineage``, every exploit. ``results.predict`` uses the best member's
    weights at its best epoch.

    Example:
        >>> res = jaxhp.pbt(task, space, population=32, generations=10, interval=2)
        >>> res.best_params, res.lineage[:3]
    """
    space = _checked_space(
        task,
        space,
        population,
        generations,
        interval,
        quantile,
        perturb,
        resample_probability,
        seed,
    )
    rng = np.random.default_rng(seed)
    values = space.decode(rng.random((population, space.dim)))  # {name: [P]}
    t0 = time.perf_counter()
    hp = task.hparams(space, values)
    pop = Population(task, hp, size=population, seed=seed, segment_epochs=interval)
    pop.start(np.arange(population), hp)
    pad = lambda a: np.concatenate([a, np.repeat(a[:1], pop.size - population, 0)])  # noqa: E731

    curves: list[dict[str, np.ndarray]] = []
    schedule = {n: [] for n in space.searched if isinstance(space[n], Float)}
    lineage: list[Exploit] = []
    for g in range(generations):
        pop.set_hp({k: pad(v) for k, v in task.hparams(space, values).items()})
        pop.train(interval)
        rows = pop.last_rows()
        curves.append({k: v[:, :population] for k, v in rows.items()})
        for n in schedule:
            schedule[n].append(
                np.repeat(values[n][None].astype(np.float64), interval, 0)
            )
        current = rows["value"][-1, :population]  # at the generation's last epoch
        if verbose:
            ok = current[np.isfinite(current)]
            top = (ok.max() if pop.spec.sign > 0 else ok.min()) if ok.size else math.nan
            print(
                f"pbt generation {g}: best current {task.metric}={top:.4f}", flush=True
            )
        if g == generations - 1:
            break
        src = _exploit_and_explore(
            space,
            values,
            current,
            pop.spec.sign,
            g,
            interval,
            quantile,
            rng,
            perturb,
            resample_probability,
            lineage,
        )
        old_run = pop.run
        pop.copy_slots(np.concatenate([src, np.arange(population, pop.size)]))
        if _on_exploit is not None:
            _on_exploit(old_run, pop.run, src)
    trials = _member_trials(
        space,
        values,
        curves,
        schedule,
        pop,
        population,
        generations,
        time.perf_counter() - t0,
    )
    res = Results(
        trials,
        metric=task.metric,
        direction=task.direction,
        model=_best_model(task, space, values, pop, population),
        stats={
            "wall_time": time.perf_counter() - t0,
            "strategy": "pbt",
            "generations": generations,
            "interval": interval,
            "exploits": len(lineage),
        },
        space=space,
    )
    res.lineage = lineage
    return res


def _checked_space(
    task,
    space,
    population,
    generations,
    interval,
    quantile,
    perturb,
    resample_probability,
    seed,
) -> Space:
    """Every argument checked; the space with the epochs PBT trains and the task's
    conditions."""
    if not isinstance(task, Task):
        raise TypeError(f"task must be a jaxhp task, got {task!r}")
    if not isinstance(space, Space):
        raise TypeError(f"space must be a jaxhp.Space, got {type(space).__name__}")
    for name in space:  # width_<i> is a width (Task.family)
        if task.family(name) in SHAPE_PARAMS and not isinstance(space[name], Fixed):
            raise ValueError(
                f"pbt: {name} is searched, but exploiting copies weights between "
                f"members, so it must be Fixed (or left to the task's default)"
                if name != "epochs"
                else "pbt: epochs is generations * interval; leave it out of the space"
            )
    check_positive_int("population", population)
    check_positive_int("generations", generations)
    check_positive_int("interval", interval)
    if population < 2:
        raise ValueError("pbt: population must be at least 2")
    if not 0 < quantile <= 0.5:
        raise ValueError(f"pbt: quantile must be in (0, 0.5], got {quantile!r}")
    lo, hi = perturb
    if not 0 < lo <= hi:
        raise ValueError(
            f"pbt: perturb must be (low, high) with 0 < low <= high, got {perturb!r}"
        )
    if not 0 <= resample_probability <= 1:
        raise ValueError("pbt: resample_probability must be in [0, 1]")
    if not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    space = Space({**dict(space), "epochs": Fixed(generations * interval)})
    task.check_space(space)
    return space.with_conditions(task.conditions(space))  # what each member shows


def _exploit_and_explore(
    space,
    values,
    current,
    sign,
    g,
    interval,
    quantile,
    rng,
    perturb,
    p_resample,
    lineage,
) -> np.ndarray:
    """Rank the members (NaN = diverged ranks last); each of the bottom ``quantile``
    copies one of the top and explores. Changes ``values`` in place, records each copy
    in ``lineage``, and returns every member's source."""
    population = len(current)
    score = np.where(np.isfinite(current), sign * current, -np.inf)
    order = np.argsort(-score, kind="stable")  # best first
    n_q = max(1, int(round(quantile * population)))
    top, bottom = order[:n_q], order[-n_q:]
    src = np.arange(population)
    before = {k: v.copy() for k, v in values.items()}
    for dst in bottom:
        s = int(rng.choice(top))
        src[dst] = s
        for n in space:
            values[n][dst] = before[n][s]
        _explore(space, values, int(dst), rng, perturb, p_resample)
        lineage.append(
            Exploit(
                generation=g,
                epoch=(g + 1) * interval,
                trial=int(dst),
                source=s,
                value=float(current[dst]),
                source_value=float(current[s]),
                params_before=space.to_python(before, int(dst)),
                params_after=space.to_python(values, int(dst)),
            )
        )
    return src


def _member_trials(
    space, values, curves, schedule, pop, population, generations, wall
) -> list[Trial]:
    """One :class:`Trial` per member: its final hyperparameters, its metric at the
    last epoch, its curves with each explored hyperparameter's schedule."""
    _, _, epochs_run, _, best_epoch = pop.flags()
    cat = {k: np.concatenate([c[k] for c in curves], 0) for k in curves[0]}
    trials = []
    params = space.to_python_all(values)
    for j in range(population):
        last = cat["value"][:, j]
        finite = np.isfinite(last)
        tc = {k: v[:, j] for k, v in cat.items()}
        tc.update({n: np.concatenate([s[:, j] for s in schedule[n]]) for n in schedule})
        trials.append(
            Trial(
                trial_id=j,
                params=params[j],
                value=float(last[-1]) if finite[-1] else math.nan,
                status="diverged" if not finite[-1] else "complete",
                epochs_run=int(epochs_run[j]),
                best_epoch=int(best_epoch[j]),
                wall_time=wall,
                round=generations - 1,
                fold_values=tuple(float(v) for v in tc["value_folds"][-1]),
                curves=tc,
            )
        )
    return trials


def _best_model(task, space, values, pop, population) -> Model | None:
    """The best member's weights at its best epoch, or None if none finished one."""
    best = pop.best(np.arange(population))
    if best is None:
        return None
    value, j = best
    hp = task.hparams(space, values)
    return Model(
        task,
        BestState(
            trial_id=j,
            value=value,
            trainable=pop.spec.trainable,
            state=pop.best_state(j),
            hp={k: np.asarray(v[j]) for k, v in hp.items()},
        ),
    )


def _explore(space: Space, values: dict, j: int, rng, perturb, p_resample) -> None:
    """Perturb or resample member ``j``'s searched hyperparameters in place."""
    for name in space.searched:
        p = space[name]
        if isinstance(p, Float):
            if rng.random() < p_resample:
                values[name][j] = p.decode(rng.random(1))[0]
            else:
                v = values[name][j] * rng.uniform(*perturb)
                values[name][j] = float(np.clip(v, p.low, p.high))
        elif isinstance(p, (Int, Choice)) and rng.random() < p_resample:
            values[name][j] = p.decode(rng.random(1))[0]
