"""``tune()``: the short way into one :class:`~jaxhp.sweep.Sweep`, with the usual
observers (a study in storage, a progress line, a callback) attached."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from jaxhp.engine import EngineOptions
from jaxhp.progress import Progress
from jaxhp.results import Results, Trial
from jaxhp.space import Space
from jaxhp.strategies import Strategy
from jaxhp.sweep import Observer, Prior, RoundRecord, Sweep
from jaxhp.tasks.base import Task

__all__ = ["tune"]


def tune(
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
    verbose: bool = False,
    callback: Callable[[list[Trial]], None] | None = None,
    storage: str | None = None,
    study_name: str = "default",
    metadata: Mapping[str, Any] | None = None,
    devices: Any = None,
    memory_budget: int | None = None,
    recycle: bool | str = False,
    eval_every: int = 1,
    timeout: float | None = None,
    enqueue: Sequence[Mapping[str, Any]] | None = None,
    engine_options: EngineOptions | None = None,
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
            bucket is done and reports progress (default 10; 1 with ``recycle``).
        bucketing: how trials are grouped into compiled programs: ``"auto"`` (default)
            merges power-of-two shape buckets where a cost model says a compile saved
            outweighs the padding added; ``"pow2"`` keeps one bucket per power-of-two
            width and batch size; ``"none"`` pads every trial to one program.
        strategy_options: keyword options of the strategy factory (grid: ``points``;
            bayes: ``n_initial``, ``acquisition_function``, ...).
        verbose: show progress: a live status line on a terminal, a line per round
            otherwise (trials done/running/stopped/diverged, best, trials/s, time left).
        callback: called with each round's finished trials.
        storage: path of a SQLite database (created if missing). Every round is
            committed atomically (trials, curves, strategy state, best model) before the
            next starts; calling ``tune`` again with the same storage and study name
            resumes the study where it stopped (the space, strategy, seed, stopper and
            data must be the same) and ends with the results an uninterrupted run has.
        study_name: the study's name inside ``storage`` (one database holds several).
        metadata: JSON-serialisable facts stored with a new study (the command line
            stores its config here).
        devices: the devices to shard each population over (default: every local
            device; on several hosts, see the README). Results do not depend on them.
        recycle: keep the population full: when a trial ends (its epochs done, stopped,
            pruned, diverged), its slot is refilled at the next segment boundary with
            the strategy's next candidate, which has been told every trial finished so
            far (``segment_epochs`` defaults to 1 here: a freed slot waits at most
            that). A freed slot takes only a candidate that fits its program: either
            one program sized for the whole space, or streams per shape bucket
            (candidates routed by shape), as the cost model expects to be faster
            (``"whole"`` or ``"shape"`` force one; ``stats["plan"]`` says which).
        memory_budget: bytes of device memory a bucket may use (per device); a bucket
            that needs more is trained in chunks sized from the compiled program's
            memory analysis (same results, reported in ``stats["chunks"]``; on a CPU
            buckets are chunked for the caches too, ``EngineOptions.cpu_chunk_bytes_per_core``).
        eval_every: validate every this many epochs, and always at a trial's last epoch
            (default 1: every epoch). Validation costs a forward pass over the validation
            rows; a sweep without early stopping that only needs final scores can set it
            to the largest ``epochs``. The best epoch is chosen among validated epochs;
            curves hold NaN in between. Early stopping needs validation every epoch.
        timeout: seconds this call may start rounds for (as Optuna's ``timeout``): once
            they have passed, no new round starts, and the round under way finishes
            (with ``recycle``, no freed slot is refilled and the trials in flight
            finish). At least one round runs. ``stats["timed_out"]`` says whether it
            ended the call; with ``storage``, calling again continues the study.
        enqueue: configurations to run first, as Optuna's ``enqueue_trial`` (a list of
            ``{name: value}``; a conditional parameter that does not matter may be left
            out, a Fixed one too). They are trials ``0..k-1``, count towards
            ``n_trials`` (or add to a whole grid's), and every strategy is told their
            results (bayes models them, and its initial design shrinks by as many).
        engine_options: how the engine runs on the devices' platform
            (:class:`~jaxhp.engine.EngineOptions`; default: that platform's). Every
            choice trains the same trials; only speed and memory differ.

    Returns:
        :class:`~jaxhp.Results`.

    Example:
        >>> result = jaxhp.tune(task, space, "random", n_trials=64, population=32)
        >>> result.best_params, result.best_value
    """
    sweep = Sweep(
        task,
        space,
        strategy,
        n_trials=n_trials,
        population=population,
        seed=seed,
        early_stopping=early_stopping,
        segment_epochs=segment_epochs,
        bucketing=bucketing,
        strategy_options=strategy_options,
        devices=devices,
        memory_budget=memory_budget,
        recycle=recycle,
        eval_every=eval_every,
        timeout=timeout,
        enqueue=enqueue,
        engine_options=engine_options,
    )
    observers: list[Observer] = []
    recorder = prior = None
    if storage is not None:
        from jaxhp.recording import StudyRecorder

        recorder = StudyRecorder(storage, study_name, sweep, metadata)
        prior = recorder.prior
        observers.append(recorder)
    if verbose and jax.process_index() == 0:
        observers.append(ProgressObserver.for_sweep(sweep, prior))
    if callback is not None:
        observers.append(CallbackObserver(callback))
    result = sweep.run(observers, prior)
    if recorder is not None:
        result.stats.update(recorder.stats())
    return result


class CallbackObserver(Observer):
    """Calls ``fn(trials)`` with each batch of finished trials."""

    def __init__(self, fn: Callable[[list[Trial]], None]):
        self.fn = fn

    def trials_finished(self, trials: list[Trial], record: RoundRecord) -> None:
        self.fn(trials)


class ProgressObserver(Observer):
    """The progress line (:class:`~jaxhp.progress.Progress`) of a sweep."""

    def __init__(self, progress: Progress):
        self.progress = progress

    @classmethod
    def for_sweep(cls, sweep: Sweep, prior: Prior | None) -> ProgressObserver:
        trials = prior.trials if prior is not None else []
        done = [t.value for t in trials if t.ok]
        best = (max if sweep.sign > 0 else min)(done) if done else math.nan
        return cls(
            Progress(
                sweep.n_trials,
                metric=sweep.task.metric,
                direction=sweep.task.direction,
                done=len(trials),
                best=best,
                counts={
                    s: sum(t.status == s for t in trials)
                    for s in ("stopped", "diverged")
                },
            )
        )

    def round_started(self, rnd: int, n: int) -> None:
        self.progress.round_started(rnd, n)

    def segment(self, report, epochs: int) -> None:
        self.progress.segment(report, epochs)

    def trials_finished(self, trials: list[Trial], record: RoundRecord) -> None:
        self.progress.rnd = record.round
        self.progress.round_finished(trials)

    def close(self) -> None:
        self.progress.close()
