"""The plain round: plan buckets, then train each bucket's trials to the end."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxhp import stopping
from jaxhp.engine.memory import chunk_for
from jaxhp.engine.options import EngineOptions
from jaxhp.engine.outcomes import BestState, BucketReport, Outcomes
from jaxhp.engine.planning import plan_buckets
from jaxhp.engine.population import Population, resolve_devices
from jaxhp.engine.programs import DEFAULT_CACHE, ProgramCache

__all__ = ["run_population"]

_phase = jax.profiler.TraceAnnotation  # names the host phases in a profile


def run_population(
    task: Any,
    hp: Mapping[str, np.ndarray],
    trial_ids: np.ndarray,
    *,
    seed: int,
    stopper: Any = None,
    segment_epochs: int = 10,
    bucketing: str = "auto",
    best_so_far: float = -math.inf,
    on_segment: Callable[[BucketReport, int], None] | None = None,
    inspect: Callable[[np.ndarray, Any], None] | None = None,
    devices: Sequence[jax.Device] | None = None,
    memory_budget: int | None = None,
    eval_every: int = 1,
    options: EngineOptions | None = None,
    cache: ProgramCache | None = None,
    compact: bool = True,
) -> tuple[Outcomes, list[BucketReport], BestState | None]:
    """Train the trials ``trial_ids`` with hyperparameters ``hp`` (``{name: [P]}``).

    Returns the outcome of every trial (:class:`Outcomes`, in trial order), a report
    per bucket, and the best-epoch state of the best trial if it beats ``best_so_far``
    (an oriented value). ``inspect(idx, run)``, if given, sees each bucket's final run
    state (rows ``idx`` of ``hp``, then padding).

    ``devices`` (default: every local device) shard the population axis; a trial's
    result does not depend on them. ``memory_budget`` (bytes per device) splits a bucket
    into chunks that fit, sized from the compiled program's memory analysis.
    ``eval_every`` validates every that many epochs and at each trial's last epoch.
    ``options`` (default: the devices' platform's) and ``cache`` (default: the
    process's) say how programs are built and where they are kept. ``compact``
    lets a bucket's training trials move into a smaller program between segments when
    the cost model says it pays (per-trial stoppers only; trials are unchanged).
    """
    trial_ids = np.asarray(trial_ids)
    devices = resolve_devices(devices)
    # The platform of the devices given (not JAX's default backend) picks the CPU or
    # accelerator paths: a CPU run on a GPU machine takes the CPU's.
    options = options or EngineOptions.for_platform(devices[0].platform)
    cache = DEFAULT_CACHE if cache is None else cache
    per_trial = stopping.is_per_trial(stopper)
    with _phase("jaxhp.plan"):
        groups = plan_buckets(
            task,
            hp,
            bucketing=bucketing,
            n_rows=int(task.data.n_train.max()),
            options=options,
            seen=cache.seen if per_trial else frozenset(),
        )
    parts: list[Outcomes] = []
    reports: list[BucketReport] = []
    best: BestState | None = None
    settings = dict(
        seed=seed,
        stopper=stopper,
        segment_epochs=segment_epochs,
        eval_every=eval_every,
        devices=devices,
        options=options,
        cache=cache,
    )
    for group in groups:
        gsub = {k: np.asarray(v)[group] for k, v in hp.items()}
        pop = Population(task, gsub, size=len(group), **settings)
        chunk = chunk_for(
            cache,
            pop.programs,
            gsub,
            pop.data,
            seed=seed,
            memory_budget=memory_budget,
            n_dev=pop.n_dev,
            per_trial_stopper=per_trial,
            options=options,
        )
        for part, i in enumerate(range(0, len(group), chunk)):
            idx = group[i : i + chunk]
            if chunk < len(group):  # a short last chunk reuses the chunk's program
                pop = Population(task, gsub, size=chunk, **settings)
                pop.report.chunk = chunk
            pop.report.part = part
            top = best.value if best is not None else best_so_far
            out, pop, cand = _train_to_end(
                pop, idx, hp, trial_ids, on_segment, top, compact and inspect is None
            )
            parts.append(out)
            reports.append(pop.report)
            best = cand or best
            if inspect is not None:
                inspect(idx, pop.run)
    outcomes = Outcomes.concat(parts)
    if len(parts) > 1:  # in trial order
        outcomes = outcomes.take(np.argsort(outcomes.trial_id, kind="stable"))
    return outcomes, reports, best


def _train_to_end(
    pop: Population, idx, hp, trial_ids, on_segment, top: float, compact: bool
) -> tuple[Outcomes, Population, BestState | None]:
    """Start the trials ``idx`` (rows of ``hp``) and train segments until they are all
    done. Between segments, when the cost model says the saved compute pays for a
    compile (:meth:`Population.compaction_gain`), the training trials move into a
    smaller population and the finished ones' outcomes are read. Returns the trials'
    outcomes (in ``idx``'s order), the last population, and the best trial's state if
    it beats ``top``."""
    with _phase("jaxhp.init"):
        pop.start(trial_ids[idx], {k: np.asarray(v)[idx] for k, v in hp.items()})
    max_epochs = int(np.asarray(hp["epochs"])[idx].max())
    epochs = 0
    parts: list[Outcomes] = []
    best: BestState | None = None
    while epochs < max_epochs:
        n = min(pop.spec.seg_epochs, max_epochs - epochs)
        with _phase("jaxhp.segment"):
            done = pop.train(n)
        epochs += done
        if on_segment is not None:
            on_segment(pop.report, epochs)
        if done < n:  # the segment ended early: every trial is inactive
            break
        if compact and epochs < max_epochs and pop.compaction_gain() > 0:
            finished = pop.finished()
            parts.append(pop.outcomes(finished))
            best = _better(pop, finished, top, best)
            pop = pop.compacted()
    slots = np.flatnonzero(pop.slots >= 0)
    parts.append(pop.outcomes(slots))
    best = _better(pop, slots, top, best)
    out = Outcomes.concat(parts)
    if len(parts) > 1:  # back in the order of idx
        pos = {int(t): i for i, t in enumerate(out.trial_id)}
        out = out.take(np.asarray([pos[int(t)] for t in trial_ids[idx]]))
    return out, pop, best


def _better(pop: Population, slots, top: float, best: BestState | None):
    """``best``, or the best trial among ``slots`` if it beats both it and ``top``."""
    cand = pop.best(slots)
    top = max(top, best.value) if best is not None else top
    if cand is None or not cand[0] > top:
        return best
    return BestState(
        trial_id=int(pop.slots[cand[1]]),
        value=cand[0],
        trainable=pop.spec.trainable,
        state=pop.best_state(cand[1]),
        hp=pop.hp(cand[1]),
    )
