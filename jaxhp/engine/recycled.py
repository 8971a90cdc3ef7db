"""The recycled stream: slots refilled with the strategy's next trials as they free."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxhp.engine.outcomes import BestState, BucketReport, TrialOutcome
from jaxhp.engine.population import Population

__all__ = ["run_recycled"]


def run_recycled(
    task: Any,
    shape_hp: Mapping[str, np.ndarray],
    source: Callable[[int], tuple[np.ndarray, dict[str, np.ndarray]]],
    on_finish: Callable[[list[TrialOutcome], int, BestState | None], None],
    *,
    slots: int,
    seed: int,
    stopper: Any = None,
    segment_epochs: int = 1,
    best_so_far: float = -math.inf,
    on_segment: Callable[[BucketReport, int], None] | None = None,
    eval_every: int = 1,
    **population: Any,
) -> tuple[BucketReport, BestState | None]:
    """Train a stream of trials in ``slots`` slots, refilling each slot when it frees.

    One compiled program serves every trial the stream can produce: its shapes come
    from ``shape_hp`` (rows spanning the space: the largest width, the largest and the
    smallest batch size). ``source(n)`` gives up to ``n`` new trials (their ids and
    hyperparameters, ``{name: [m]}``; ``m == 0`` when there are no more); between
    segments of ``segment_epochs`` epochs, every trial that finished (its epochs done,
    stopped, pruned or diverged) is reported to ``on_finish(outcomes, boundary, best)``
    (``best``: the best-epoch state of the best trial so far when one of these beat
    it, else None) and its slot is refilled from ``source`` without recompiling. A trial's result is the
    one it has trained alone (its keys derive from ``(seed, trial id)``).
    """
    pop = Population(
        task,
        shape_hp,
        size=slots,
        seed=seed,
        stopper=stopper,
        segment_epochs=segment_epochs,
        eval_every=eval_every,
        **population,
    )
    pop.label = pop.report.key = (
        f"recycled B{pop.spec.batch} S{pop.spec.steps} P{pop.size}"
    )
    ids, hp = source(pop.size)
    if len(ids) == 0:
        return pop.report, None
    pop.start(ids, hp)
    best: BestState | None = None
    boundary = 0
    while (pop.slots >= 0).any():
        done = pop.train()
        if on_segment is not None:
            on_segment(pop.report, boundary)
        finished = pop.finished()
        if len(finished):
            cand = pop.best(finished)
            top = best.value if best is not None else best_so_far
            improved = None
            if cand is not None and cand[0] > top:
                best = improved = BestState(
                    trial_id=int(pop.slots[cand[1]]),
                    value=cand[0],
                    trainable=pop.spec.trainable,
                    state=pop.best_state(cand[1]),
                    hp=pop.hp(cand[1]),
                )
            outcomes = list(pop.outcomes(finished))
            pop.release(finished)
            on_finish(outcomes, boundary, improved)
        boundary += 1
        free = np.flatnonzero(pop.slots < 0)
        new_ids, new_hp = source(len(free)) if len(free) else ([], {})
        if len(new_ids):
            pop.refill(free[: len(new_ids)], new_ids, new_hp)
        elif done < segment_epochs and not (pop.slots >= 0).any():
            break
    return pop.report, best
