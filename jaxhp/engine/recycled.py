"""The recycled stream: slots refilled with the strategy's next trials as they free.

A freed slot is refilled only with a candidate that fits its program. Either one
program spans the whole space (its widest network, largest batch and the smallest
batch's step count: every trial pays the largest shape), or each shape bucket (the
planner's: power-of-two width and batch size) has streams of its own and the
candidates are routed to the stream they fit; a candidate whose shape has no stream
with a free slot waits for one, or opens a new stream; a stream retires once empty.
The cost model (``EngineOptions.cost``) chooses between the two from the first
candidates; the choice is recorded in ``plan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxhp.engine.options import EngineOptions
from jaxhp.engine.outcomes import BestState, BucketReport, TrialOutcome
from jaxhp.engine.planning import bucket_shape, group_by, pop_size
from jaxhp.engine.population import Population, resolve_devices
from jaxhp.tasks.base import next_pow2_array

__all__ = ["run_recycled", "stream_costs"]


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
    streams: str = "auto",
    expected_trials: int | None = None,
    plan: dict | None = None,
    **population: Any,
) -> tuple[list[BucketReport], BestState | None]:
    """Train a stream of trials in ``slots`` slots, refilling each slot when it frees.

    ``source(n)`` gives up to ``n`` new trials (their ids and hyperparameters,
    ``{name: [m]}``; ``m == 0`` when there are no more); between segments of
    ``segment_epochs`` epochs, every trial that finished (its epochs done, stopped,
    pruned or diverged) is reported to ``on_finish(outcomes, boundary, best)``
    (``best``: the best-epoch state of the best trial so far when one of these beat
    it, else None) and its slot is refilled without recompiling. At most ``slots`` trials are in flight (training
    or waiting for a slot). A trial's result is the one it has trained alone (its keys
    derive from ``(seed, trial id)``).

    ``streams``: ``"whole"``, one program whose shapes come from ``shape_hp`` (rows
    spanning the space: the largest width, the largest and the smallest batch size);
    ``"shape"``, streams per shape bucket; ``"auto"``, whichever the cost model
    expects to take less time for ``expected_trials`` trials (default ``slots``).
    ``plan``, if given, receives the choice and the estimates. Returns a report per
    program and the best trial's state if it beats ``best_so_far``.
    """
    if streams not in ("auto", "whole", "shape"):
        raise ValueError(f"streams must be 'auto', 'whole' or 'shape', got {streams!r}")
    ids, hp = source(slots)
    if len(ids) == 0:
        return [], None
    settings = dict(
        seed=seed,
        stopper=stopper,
        segment_epochs=segment_epochs,
        eval_every=eval_every,
        **population,
    )
    devices = resolve_devices(population.get("devices"))
    options = population.get("options") or EngineOptions.for_platform(
        devices[0].platform
    )
    est = stream_costs(task, shape_hp, hp, slots, expected_trials or slots, options)
    if streams == "auto":
        streams = "whole" if est["whole_s"] <= est["shape_s"] else "shape"
    if plan is not None:
        plan.update(recycle=streams, recycle_estimate=est)
    run = _Streams(task, shape_hp, settings, slots, streams == "whole")
    run.best_value = best_so_far
    run.admit(ids, hp)
    boundary = 0
    while run.streams:
        for st in list(run.streams):
            st.pop.train()
            if on_segment is not None:
                on_segment(st.pop.report, boundary)
            finished = st.pop.finished()
            if len(finished):
                improved = run.take_best(st.pop, finished)
                outcomes = list(st.pop.outcomes(finished))
                st.pop.release(finished)
                on_finish(outcomes, boundary, improved)
        boundary += 1
        free = slots - run.in_flight()
        new_ids, new_hp = source(free) if free > 0 else ([], {})
        if len(new_ids):
            run.admit(new_ids, new_hp)
        else:
            run.admit_waiting()
        run.retire_and_compact()
    return run.reports, run.best


class _Stream:
    """One program of the stream and the hyperparameter rows its shapes span."""

    def __init__(self, pop: Population, span: dict[str, np.ndarray], key: Any):
        self.pop, self.span, self.key = pop, span, key

    def fits(self, task: Any, row: dict[str, np.ndarray]) -> bool:
        """Whether the trial ``row`` (``{name: [1]}``) runs in this program as it is
        (its shapes inside the program's; its batch size and step count where the
        program assumes every trial's are the same)."""
        spec = self.pop.spec
        merged = {k: np.concatenate([self.span[k], row[k]]) for k in self.span}
        n = int(np.max(task.data.n_train))
        if bucket_shape(task, merged, n).key != self.pop.shape.key:
            return False
        if spec.uniform_batch and int(row["batch_size"][0]) != spec.batch:
            return False
        steps = -(-task.data.n_train // int(row["batch_size"][0]))
        return not spec.uniform_steps or bool(np.all(steps == spec.steps))


class _Streams:
    """The open streams, the trials waiting for a slot, the best trial so far."""

    def __init__(self, task, shape_hp, settings, slots: int, whole: bool):
        self.task, self.settings, self.slots, self.whole = task, settings, slots, whole
        self.shape_hp = {k: np.asarray(v) for k, v in shape_hp.items()}
        self.streams: list[_Stream] = []
        self.reports: list[BucketReport] = []
        self.waiting: list[tuple[int, dict[str, np.ndarray]]] = []
        self.best: BestState | None = None
        self.best_value = -math.inf

    def in_flight(self) -> int:
        occupied = sum(int((s.pop.slots >= 0).sum()) for s in self.streams)
        return occupied + len(self.waiting)

    def admit(self, ids, hp) -> None:
        """Route new trials to free slots that fit them; open streams for the rest."""
        hp = {k: np.asarray(v) for k, v in hp.items()}
        for j, tid in enumerate(np.asarray(ids).tolist()):
            self.waiting.append((tid, {k: v[j : j + 1] for k, v in hp.items()}))
        self.admit_waiting()

    def admit_waiting(self) -> None:
        left = []
        fills: dict[int, list] = {}
        free = {id(s): list(np.flatnonzero(s.pop.slots < 0)) for s in self.streams}
        for tid, row in self.waiting:
            for s in self.streams:
                if free[id(s)] and s.fits(self.task, row):
                    fills.setdefault(id(s), []).append((free[id(s)].pop(0), tid, row))
                    break
            else:
                left.append((tid, row))
        for s in self.streams:
            if id(s) in fills:
                slots, tids, rows = zip(*fills[id(s)], strict=True)
                s.pop.refill(list(slots), list(tids), _stack(rows))
        self.waiting = left
        self._open()

    def _open(self) -> None:
        """Open streams for waiting trials that fit no free slot: each group of them
        (shape bucket) when no stream of its shape is training, or when enough wait
        (a quarter of the slots) to be worth a program of their own."""
        if not self.waiting:
            return
        rows = _stack([r for _, r in self.waiting])
        tids = np.asarray([t for t, _ in self.waiting])
        if self.whole:
            groups = {"whole": np.arange(len(tids))}
        else:
            groups = group_by(
                self.task.shape_keys(rows), next_pow2_array(rows["batch_size"])
            )
        keep = np.ones(len(tids), bool)
        for key, idx in groups.items():
            training = any(s.key == key for s in self.streams)
            if training and len(idx) < max(1, self.slots // 4):
                continue
            sub = {k: v[idx] for k, v in rows.items()}
            span = (
                {k: np.concatenate([self.shape_hp[k], sub[k]]) for k in sub}
                if self.whole
                else sub
            )
            pop = Population(self.task, span, size=len(idx), **self.settings)
            if self.whole:
                pop.label = pop.report.key = (
                    f"recycled B{pop.spec.batch} S{pop.spec.steps} P{pop.size}"
                )
            else:
                pop.label = pop.report.key = f"recycled {pop.label}"
            pop.start(tids[idx], sub)
            self.streams.append(_Stream(pop, span, key))
            self.reports.append(pop.report)
            keep[idx] = False
        self.waiting = [w for w, k in zip(self.waiting, keep, strict=True) if k]

    def retire_and_compact(self) -> None:
        """Drop the streams that hold no trial; shrink one whose training trials fill
        a small part of it when nobody waits for its slots and the cost model says
        the compute saved pays for a compile."""
        self.streams = [s for s in self.streams if (s.pop.slots >= 0).any()]
        if self.waiting:
            return
        for s in self.streams:
            if s.pop.finished().size == 0 and s.pop.compaction_gain() > 0:
                s.pop = s.pop.compacted()

    def take_best(self, pop: Population, slots: np.ndarray) -> BestState | None:
        """The best of ``slots``' trials when it beats the best so far, else None."""
        cand = pop.best(slots)
        if cand is None or cand[0] <= self.best_value:
            return None
        self.best_value = cand[0]
        self.best = BestState(
            trial_id=int(pop.slots[cand[1]]),
            value=cand[0],
            trainable=pop.spec.trainable,
            state=pop.best_state(cand[1]),
            hp=pop.hp(cand[1]),
        )
        return self.best


def _stack(rows) -> dict[str, np.ndarray]:
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def stream_costs(
    task: Any,
    shape_hp: Mapping[str, np.ndarray],
    hp: Mapping[str, np.ndarray],
    slots: int,
    expected_trials: int,
    options: EngineOptions,
) -> dict[str, float]:
    """Estimated seconds of a recycled stream of ``expected_trials`` trials like
    ``hp`` (a sample of the candidates): one whole-space program against streams per
    shape bucket. Each trial pays its program's padded step cost for its epochs; the
    streams' programs pay a compile each and their slots' power-of-two padding."""
    c = options.cost
    n = int(np.max(task.data.n_train))
    n_folds = task.data.n_folds
    hp = {k: np.asarray(v) for k, v in hp.items()}
    epochs = hp["epochs"].astype(float)
    scale = expected_trials / len(epochs)

    def slot_epoch(sub, size):  # seconds of one slot for one epoch
        shape = bucket_shape(task, sub, n)
        flops = n_folds * shape.batch * task.flops_per_row(shape.trainable)
        return shape.steps * (c.step_s / size + flops / c.flops)

    span = {k: np.concatenate([np.asarray(shape_hp[k]), hp[k]]) for k in hp}
    whole = scale * epochs.sum() * slot_epoch(span, pop_size(slots, 1)) + c.compile_s
    groups = group_by(task.shape_keys(hp), next_pow2_array(hp["batch_size"]))
    shaped = 0.0
    for idx in groups.values():
        size = pop_size(len(idx), 1)
        sub = {k: v[idx] for k, v in hp.items()}
        # A stream of `len(idx)` trials runs `size` slots: padding slots cost too.
        shaped += scale * epochs[idx].sum() * slot_epoch(sub, size) * size / len(idx)
        shaped += c.compile_s
    return {"whole_s": float(whole), "shape_s": float(shaped), "groups": len(groups)}
