"""One validated sweep: a task, a space, a strategy and the engine's settings.

:class:`Sweep` checks everything once, before anything compiles, and then runs the
round loop: ask the strategy for a population, train it (:func:`run_population`, or a
recycled stream), tell the strategy. Whatever watches a sweep (the study in storage,
the progress line, the user's callback) is an :class:`Observer` told about each
finished batch of trials; none of them is a branch inside the loop. ``tune()``, the
command line and ``jaxhp resume`` all build a :class:`Sweep`, as Optuna's
``create_study`` ties a sampler, a pruner and a storage that know nothing of each other.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from jaxhp.engine import BucketReport, EngineOptions, run_population, work
from jaxhp.engine.population import resolve_devices
from jaxhp.results import Model, Results, Trial
from jaxhp.space import Space, SpaceError
from jaxhp.strategies import Strategy, make_strategy, resolve_n_trials, with_enqueued
from jaxhp.tasks.base import Task

__all__ = ["Observer", "Prior", "RoundRecord", "Sweep"]


@dataclass
class RoundRecord:
    """What an observer learns with a batch of finished trials: a round's (or, when
    recycling, a segment boundary's) position and what storage needs to resume."""

    round: int
    started: int  # trials started so far (asked of the strategy)
    strategy_state: Any  # the strategy's state after it was told these trials
    wall_time: float
    compile_time: float
    model: Model | None  # the new best trial's model, when it improved
    model_value: float  # the best oriented value so far
    # A recycled stream's trials in flight (ids [k], points [k, D]): a resumed stream
    # restarts them from scratch. None for a plain round (nothing is in flight).
    pending: tuple[np.ndarray, np.ndarray] | None = None


class Observer:
    """Watches a sweep. Every method is optional (the defaults do nothing)."""

    def round_started(self, rnd: int, n: int) -> None:
        """Round ``rnd`` starts training ``n`` trials."""

    def segment(self, report: BucketReport, epochs: int) -> None:
        """A compiled segment of a bucket finished (``epochs`` trained so far)."""

    def trials_finished(self, trials: list[Trial], record: RoundRecord) -> None:
        """``trials`` finished; the strategy has been told them."""

    def close(self) -> None:
        """The sweep ended (or raised): flush, release."""


@dataclass
class Prior:
    """Where a resumed sweep starts: what a study in storage holds."""

    trials: list[Trial] = field(default_factory=list)
    started: int = 0
    rounds: int = 0
    wall_time: float = 0.0
    compile_time: float = 0.0
    model: Model | None = None
    model_value: float = -math.inf
    strategy_state: Any = None
    pending: tuple[np.ndarray, np.ndarray] | None = None  # a stream's trials in flight


def check_positive_int(name: str, v: Any, *, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


def check_timeout(timeout: Any) -> None:
    """Raise ``ValueError`` unless ``timeout`` is None or a positive, finite number of
    seconds."""
    if timeout is not None and not (
        isinstance(timeout, numbers.Real)
        and not isinstance(timeout, bool)
        and 0 < timeout < math.inf
    ):
        raise ValueError(
            f"timeout must be a positive number of seconds, got {timeout!r}"
        )


class Sweep:
    """A validated sweep of ``task`` over ``space`` (arguments as :func:`jaxhp.tune`'s).

    Construction checks every argument and raises with the argument's name before
    anything compiles; :meth:`run` trains. A sweep holds no results: run it again with
    a :class:`Prior` to continue one.
    """

    def __init__(
        self,
        task: Task,
        space: Space,
        strategy: str | Strategy = "random",
        *,
        n_trials: int | None = None,
        population: int = 128,
        seed: int = 0,
        early_stopping: Any = None,
        segment_epochs: int | None = None,
        bucketing: str = "auto",
        strategy_options: Mapping[str, Any] | None = None,
        devices: Any = None,
        memory_budget: int | None = None,
        recycle: bool | str = False,
        eval_every: int = 1,
        timeout: float | None = None,
        enqueue: Sequence[Mapping[str, Any]] | None = None,
        engine_options: EngineOptions | None = None,
    ):
        if not isinstance(task, Task):
            raise TypeError(
                f"task must be a jaxhp task (e.g. jaxhp.tasks.MLPClassifier), got "
                f"{task!r}"
            )
        if not isinstance(space, Space):
            raise TypeError(f"space must be a jaxhp.Space, got {type(space).__name__}")
        task.check_space(space)
        self.task = task
        self.given_space = space  # the user's space: what a stored study records
        self.space = space.with_conditions(task.conditions(space))
        self._check_settings(
            n_trials, population, segment_epochs, memory_budget, eval_every, timeout
        )
        self._check_engine(eval_every, early_stopping, bucketing, seed, devices)
        self.population, self.seed = population, int(seed)
        self.early_stopping, self.bucketing = early_stopping, bucketing
        self.segment_epochs = segment_epochs or (1 if recycle else 10)
        if recycle not in (False, True, "auto", "whole", "shape"):
            raise ValueError(
                f"recycle must be True, False, 'whole' or 'shape', got {recycle!r}"
            )
        self.memory_budget, self.recycle = memory_budget, bool(recycle)
        # Recycled streams: one whole-space program, one per shape bucket, or the cost
        # model's choice (engine.run_recycled).
        self.streams = recycle if isinstance(recycle, str) else "auto"
        self.eval_every, self.timeout = eval_every, timeout
        self.devices = None if devices is None else list(devices)
        self.engine_options = engine_options
        self.strategy_options = dict(strategy_options or {})
        strat = make_strategy(strategy, self.space, **self.strategy_options)
        self.strategy, self.n_trials, self.enqueue = enqueued_first(
            strat, self.space, enqueue, n_trials
        )
        self.sign = 1.0 if task.direction == "maximize" else -1.0
        # Trials of different static configurations (a user's Trainable without
        # pad=) cannot share a program: refused where one program would hold them
        # all, and recycled per shape.
        if not task.can_share(task.hparams(self.space, extremes(self.space))):
            one = "bucketing='none'" if bucketing == "none" else None
            one = "recycle='whole'" if self.recycle and self.streams == "whole" else one
            if one is not None:
                raise ValueError(
                    f"{one} trains every trial in one program, but trials with "
                    "different static hyperparameters cannot share one unless the "
                    "task says how to pad them (TrainableTask(..., pad=...))"
                )
            self.streams = "shape" if self.recycle else self.streams

    @staticmethod
    def _check_settings(
        n_trials, population, segment_epochs, memory_budget, eval_every, timeout
    ):
        check_positive_int("n_trials", n_trials, allow_none=True)
        check_positive_int("population", population)
        check_positive_int("segment_epochs", segment_epochs, allow_none=True)
        check_positive_int("memory_budget", memory_budget, allow_none=True)
        check_positive_int("eval_every", eval_every)
        check_timeout(timeout)

    @staticmethod
    def _check_engine(eval_every, early_stopping, bucketing, seed, devices):
        if eval_every > 1 and early_stopping is not None:
            raise ValueError(
                f"eval_every={eval_every} cannot be combined with early_stopping: a "
                "stopper reads the validation metric every epoch (use eval_every=1)"
            )
        if bucketing not in ("auto", "pow2", "none"):
            raise ValueError(
                f"bucketing must be 'auto', 'pow2' or 'none', got {bucketing!r}"
            )
        if (
            not isinstance(seed, numbers.Integral)
            or isinstance(seed, bool)
            or not -(2**63) <= seed < 2**63
        ):
            raise ValueError(
                f"seed must be an integer in [-2**63, 2**63), got {seed!r}"
            )
        if early_stopping is not None and not (
            hasattr(early_stopping, "init") and hasattr(early_stopping, "update")
        ):
            raise TypeError(
                "early_stopping must be a stopper such as Patience(5), got "
                f"{early_stopping!r}"
            )
        if devices is not None and not list(devices):
            raise ValueError("devices is empty; pass None for every local device")

    @property
    def options(self) -> EngineOptions:
        """The engine's options: those given, else the devices' platform's."""
        if self.engine_options is None:
            platform = resolve_devices(self.devices)[0].platform
            self.engine_options = EngineOptions.for_platform(platform)
        return self.engine_options

    # -- running -----------------------------------------------------------------------
    def run(
        self, observers: Sequence[Observer] = (), prior: Prior | None = None
    ) -> Results:
        """Train the sweep's trials (those not already in ``prior``), telling
        ``observers`` as they finish; returns every trial, ``prior``'s included."""
        prior = prior or Prior()
        loop = _Loop(self, list(observers), prior)
        t0 = time.perf_counter()
        try:
            if self.recycle:
                loop.recycled()
            else:
                loop.rounds()
        finally:
            for o in observers:
                o.close()
        elapsed = time.perf_counter() - t0
        buckets = loop.buckets
        stats = {
            "wall_time": prior.wall_time + elapsed,
            "compile_time": prior.compile_time + sum(r.compile_time for r in buckets),
            "programs_compiled": sum(r.compile_time > 0 for r in buckets),
            "buckets": sum(r.part == 0 for r in buckets),  # chunks count once
            "trials_per_second": sum(r.trials for r in buckets) / elapsed
            if elapsed > 0
            else math.inf,
            "strategy": self.strategy.name,
            "resumed_trials": len(prior.trials),
            "devices": max((r.devices for r in buckets), default=1),
            "chunks": sorted({r.chunk for r in buckets if r.chunk}),
            "timed_out": loop.clock.fired,
            # Executed against useful training work (engine.work): padding, frozen
            # slots and compile seconds, this run's (a resumed sweep's earlier runs
            # are not counted).
            "work": work.total(buckets),
            "plan": {
                **loop.plan,
                "compactions": sum(max(len(r.sizes) - 1, 0) for r in buckets),
            },
        }
        return Results(
            loop.trials,
            metric=self.task.metric,
            direction=self.task.direction,
            model=loop.model,
            stats=stats,
            space=self.space,
        )


class _Loop:
    """One run of a sweep: its running state and the two ways of training."""

    def __init__(self, sweep: Sweep, observers: list[Observer], prior: Prior):
        self.sweep, self.observers = sweep, observers
        self.trials = list(prior.trials)
        self.started, self.rnd = prior.started, prior.rounds
        self.model, self.model_value = prior.model, prior.model_value
        self.state = (
            prior.strategy_state
            if prior.strategy_state is not None
            else sweep.strategy.init(jax.random.key(sweep.seed))
        )
        self.buckets: list[BucketReport] = []
        self.plan: dict[str, Any] = {
            "platform": sweep.options.platform,
            "cost_model": dataclasses.asdict(sweep.options.cost),
            "mode": "recycle" if sweep.recycle else "rounds",
        }
        self.clock = Deadline(sweep.timeout, time.perf_counter())
        self.pending = prior.pending

    def _notify(self, event: str, *args) -> None:
        for o in self.observers:
            getattr(o, event)(*args)

    def _segment(self, report: BucketReport, epochs: int) -> None:
        self._notify("segment", report, epochs)

    def _told(
        self,
        u,
        new: list[Trial],
        t_round: float,
        compile_time: float,
        model,
        pending=None,
    ):
        """Tell the strategy ``new`` (asked as points ``u``) and the observers."""
        sign = self.sweep.sign
        y = np.asarray([-sign * t.value if t.ok else np.nan for t in new])
        self.state = self.sweep.strategy.tell(self.state, u, y)
        self.trials.extend(new)
        record = RoundRecord(
            round=self.rnd,
            started=self.started,
            strategy_state=self.state,
            wall_time=time.perf_counter() - t_round,
            compile_time=compile_time,
            model=model,
            model_value=self.model_value,
            pending=pending,
        )
        self._notify("trials_finished", new, record)

    def rounds(self) -> None:
        """The plain round loop: a population at a time, each trained to the end."""
        sw = self.sweep
        self.plan.update(mode="rounds", bucketing=sw.bucketing)
        first = True  # this call's first round runs whatever the timeout
        while self.started < sw.n_trials and (first or not self.clock.passed()):
            first = False
            t_round = time.perf_counter()
            n = min(sw.population, sw.n_trials - self.started)
            u, self.state = sw.strategy.ask(self.state, n)
            # Inactive parameters at their constant (a strategy given as an object may
            # not know the conditions); the strategy is told the points it asked.
            values = sw.space.decode(sw.space.canonical(u))
            ids = np.arange(self.started, self.started + n)
            self._notify("round_started", self.rnd, n)
            outcomes, reports, cand = run_population(
                sw.task,
                sw.task.hparams(sw.space, values),
                ids,
                seed=sw.seed,
                stopper=sw.early_stopping,
                segment_epochs=sw.segment_epochs,
                bucketing=sw.bucketing,
                best_so_far=self.model_value,
                on_segment=self._segment,
                devices=sw.devices,
                memory_budget=sw.memory_budget,
                eval_every=sw.eval_every,
                options=sw.options,
            )
            self.buckets.extend(reports)
            new_model = None
            if cand is not None:
                self.model = new_model = Model(sw.task, cand)
                self.model_value = cand.value
            params = sw.space.to_python_all(values)
            new = trials_of(outcomes, [params[t - self.started] for t in ids], self.rnd)
            self.started += n
            compile_time = sum(r.compile_time for r in reports)
            self._told(u, new, t_round, compile_time, new_model)
            self.rnd += 1

    def recycled(self) -> None:
        """The recycled stream: a slot refilled with the strategy's next candidate as
        soon as its trial finishes (see :func:`jaxhp.engine.run_recycled`). Each batch
        of finished trials is one record, with the trials then in flight; a stream
        resumed from a study restarts those first, from scratch, with their own ids
        and points."""
        from jaxhp.engine import run_recycled

        sw = self.sweep
        in_flight: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
        ids0, u0 = self.pending or (np.zeros(0, np.int64), None)
        queue = [np.asarray(ids0, np.int64), np.zeros((0, sw.space.dim))]
        if u0 is not None:
            queue[1] = np.asarray(u0, np.float64).reshape(len(ids0), sw.space.dim)
        first, since = [True], [time.perf_counter()]

        def source(n: int):
            ids_q, u_q = queue
            k = min(n, len(ids_q))
            n_new = min(n - k, sw.n_trials - self.started)
            if not first[0] and n > 0 and self.clock.passed():  # no refills now
                k = n_new = 0
            first[0] = False
            parts_u, parts_ids = [u_q[:k]], [ids_q[:k]]
            queue[:] = [ids_q[k:], u_q[k:]]
            if n_new > 0:
                u_new, self.state = sw.strategy.ask(self.state, n_new)
                parts_u.append(np.asarray(u_new, np.float64))
                parts_ids.append(np.arange(self.started, self.started + n_new))
                self.started += n_new
            ids = np.concatenate(parts_ids).astype(np.int64)
            if not len(ids):
                return np.zeros(0, np.int64), {}
            u = np.concatenate(parts_u)
            values = sw.space.decode(sw.space.canonical(u))
            params = sw.space.to_python_all(values)
            for j, tid in enumerate(ids.tolist()):
                in_flight[tid] = (u[j], params[j])
            self._notify("round_started", self.rnd, len(in_flight))
            return ids, sw.task.hparams(sw.space, values)

        def on_finish(outcomes, boundary, best):
            params = [in_flight[o.trial_id][1] for o in outcomes]
            new = trials_of_records(outcomes, params, boundary)
            u = np.stack([in_flight.pop(t.trial_id)[0] for t in new])
            model = None
            if best is not None:
                self.model = model = Model(sw.task, best)
                self.model_value = best.value
            # Not yet started from the stored queue, then those in slots: all restart.
            ids = [*queue[0].tolist(), *in_flight]
            points = [*queue[1], *(in_flight[t][0] for t in in_flight)]
            pending = (
                np.asarray(ids, np.int64),
                np.asarray(points, np.float64).reshape(len(ids), sw.space.dim),
            )
            self._told(u, new, since[0], 0.0, model, pending)
            self.rnd += 1  # one record per batch: a study's rounds stay distinct
            since[0] = time.perf_counter()

        reports, _ = run_recycled(
            sw.task,
            sw.task.hparams(sw.space, extremes(sw.space)),
            source,
            on_finish,
            slots=sw.population,
            seed=sw.seed,
            stopper=sw.early_stopping,
            segment_epochs=sw.segment_epochs,
            on_segment=self._segment,
            eval_every=sw.eval_every,
            best_so_far=self.model_value,
            options=sw.options,
            streams=sw.streams,
            expected_trials=sw.n_trials,
            plan=self.plan,
        )
        self.buckets.extend(reports)


def trials_of(outcomes, params: list[dict], rnd: int) -> list[Trial]:
    """:class:`Trial` records straight from the engine's columns."""
    return [
        Trial(
            trial_id=tid,
            params=p,
            value=value,
            status=status,
            epochs_run=epochs_run,
            best_epoch=best_epoch,
            wall_time=wall,
            round=rnd,
            fold_values=tuple(folds),
            curves=curves,
        )
        for tid, p, status, value, epochs_run, best_epoch, wall, folds, curves in zip(
            outcomes.trial_id.tolist(),
            params,
            outcomes.status.tolist(),
            outcomes.value.tolist(),
            outcomes.epochs_run.tolist(),
            outcomes.best_epoch.tolist(),
            outcomes.wall_time.tolist(),
            outcomes.fold_values.astype(float).tolist(),
            outcomes.curve_dicts(),
            strict=True,
        )
    ]


def trials_of_records(outcomes, params: list[dict], rnd: int) -> list[Trial]:
    """:class:`Trial` records from the engine's per-trial records."""
    return [
        Trial(
            trial_id=o.trial_id,
            params=p,
            value=o.value,
            status=o.status,
            epochs_run=o.epochs_run,
            best_epoch=o.best_epoch,
            wall_time=o.wall_time,
            round=rnd,
            fold_values=tuple(np.asarray(o.fold_values, float).tolist()),
            curves=o.curves,
        )
        for o, p in zip(outcomes, params, strict=True)
    ]


def extremes(space: Space) -> dict[str, np.ndarray]:
    """Two decoded configurations spanning the space's shapes: every numeric parameter
    at its largest value, then at its smallest (a string choice: its first value)."""
    hi, lo = {}, {}
    for name, p in space.items():
        if hasattr(p, "low"):  # Float, Int
            vals = [p.low, p.high]
        elif hasattr(p, "values"):  # Choice: decoded as the value, or as an index
            vals = list(p.values) if p.numeric else [0]
        else:  # Fixed (the task reads the value from the space)
            vals = [p.value if p.numeric else 0]
        hi[name], lo[name] = max(vals), min(vals)
    return {k: np.asarray([hi[k], lo[k]]) for k in hi}


def enqueued_first(
    strat: Strategy,
    space: Space,
    configs: Sequence[Mapping[str, Any]] | None,
    n_trials: int | None,
) -> tuple[Strategy, int, list[dict[str, Any]]]:
    """``strat`` asked for ``enqueue``'s configurations first, the number of trials
    (the whole grid's and theirs for ``n_trials=None``), and the configurations as
    plain dicts (what a stored study records)."""
    queued, plain = enqueued_points(space, configs)
    strat = with_enqueued(strat, queued)
    n_trials = resolve_n_trials(strat, n_trials)
    if n_trials < len(queued):
        raise ValueError(
            f"enqueue holds {len(queued)} configurations, more than n_trials={n_trials}"
        )
    return strat, n_trials, plain


def enqueued_points(
    space: Space, configs: Sequence[Mapping[str, Any]] | None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``enqueue``'s configurations, validated, as canonical points ``[k, D]`` and as
    plain dicts."""
    if configs is None:
        return np.zeros((0, space.dim)), []
    if isinstance(configs, (Mapping, str)) or not isinstance(configs, Sequence):
        raise TypeError(
            f"enqueue takes a list of configurations ({{name: value}} dicts), got "
            f"{configs!r}"
        )
    plain, points = [], [np.zeros((0, space.dim))]
    for i, cfg in enumerate(configs):
        if not isinstance(cfg, Mapping):
            raise TypeError(
                f"enqueue[{i}]: expected a {{name: value}} dict, got {cfg!r}"
            )
        try:  # one at a time, so that an error can name the configuration
            points.append(space.encode(space.from_python([cfg])))
        except SpaceError as e:
            raise SpaceError(f"enqueue[{i}]: {e}") from None
        plain.append(dict(cfg))
    return space.canonical(np.concatenate(points)), plain


class Deadline:
    """A sweep's ``timeout``: whether it has passed, the same answer in every process
    (each trains its shard of every round, so all must stop at the same one)."""

    def __init__(self, timeout: float | None, t0: float):
        self.at = None if timeout is None else t0 + timeout
        self.fired = False

    def passed(self) -> bool:
        if self.at is None:
            return False
        late = np.asarray(time.perf_counter() >= self.at)
        if jax.process_count() > 1:  # process 0's clock decides for all
            from jax.experimental import multihost_utils

            late = multihost_utils.broadcast_one_to_all(late)
        self.fired = self.fired or bool(late)
        return bool(late)
