"""``tune()``: the round loop tying a strategy, the population engine and a stopper."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxhp.engine import BucketReport, run_population
from jaxhp.progress import Progress
from jaxhp.results import Model, Results, Trial
from jaxhp.space import Space, SpaceError
from jaxhp.storage import StudyMismatchError
from jaxhp.strategies import (
    Strategy,
    make_strategy,
    resolve_n_trials,
    with_enqueued,
)
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
    recycle: bool = False,
    eval_every: int = 1,
    timeout: float | None = None,
    enqueue: Sequence[Mapping[str, Any]] | None = None,
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
            far. One compiled program sized for the whole space serves every trial
            (``segment_epochs`` defaults to 1 here: a freed slot waits at most that).
        memory_budget: bytes of device memory a bucket may use (per device); a bucket
            that needs more is trained in chunks sized from the compiled program's
            memory analysis (same results, reported in ``stats["chunks"]``; on a CPU
            buckets are chunked for the caches too, ``engine.CPU_CHUNK_BYTES_PER_CORE``).
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
    given = space  # the user's space: what a stored study records and checks
    space = space.with_conditions(task.conditions(space))
    check_positive_int("n_trials", n_trials, allow_none=True)
    check_positive_int("population", population)
    check_positive_int("segment_epochs", segment_epochs, allow_none=True)
    if segment_epochs is None:
        segment_epochs = 1 if recycle else 10
    check_positive_int("memory_budget", memory_budget, allow_none=True)
    check_positive_int("eval_every", eval_every)
    check_timeout(timeout)
    if eval_every > 1 and early_stopping is not None:
        raise ValueError(
            f"eval_every={eval_every} cannot be combined with early_stopping: a stopper "
            "reads the validation metric every epoch (use eval_every=1)"
        )
    if bucketing not in ("auto", "pow2", "none"):
        raise ValueError(
            f"bucketing must be 'auto', 'pow2' or 'none', got {bucketing!r}"
        )
    if not isinstance(seed, numbers.Integral) or not -(2**63) <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [-2**63, 2**63), got {seed!r}")
    if early_stopping is not None and not (
        hasattr(early_stopping, "init") and hasattr(early_stopping, "update")
    ):
        raise TypeError(
            f"early_stopping must be a stopper such as Patience(5), got {early_stopping!r}"
        )
    if devices is not None:
        devices = list(devices)  # read twice: here and by every round
        if not devices:
            raise ValueError("devices is empty; pass None for every local device")
    strat = make_strategy(strategy, space, **dict(strategy_options or {}))
    strat, n_trials, enqueue = enqueued_first(strat, space, enqueue, n_trials)

    sign = 1.0 if task.direction == "maximize" else -1.0
    state = strat.init(jax.random.key(seed))
    trials: list[Trial] = []
    model: Model | None = None
    model_value = -math.inf  # oriented: higher is better
    buckets: list[BucketReport] = []
    started = rnd = 0
    wall0 = compile0 = 0.0
    study = None
    n_prior = 0  # trials loaded from storage
    leader = jax.process_index() == 0  # several processes: only process 0 writes
    pending = None  # a recycled stream's trials in flight when it was stored
    if storage is not None:
        study, prior = _open_study(
            storage,
            study_name,
            task,
            {
                "space": given.to_data(),
                "strategy": strat.name,
                "strategy_options": repr(dict(strategy_options or {})),
                "seed": int(seed),
                "early_stopping": repr(early_stopping),
                "eval_every": int(eval_every),
                "task": type(task).__name__,
                "data": _fingerprint(task),
                "enqueue": repr(enqueue),
                "recycle": bool(recycle),
            },
            metadata,
            template=state,
            leader=leader,
        )
        if prior is not None:
            trials = list(prior.trials)
            n_prior = len(trials)
            started, rnd = prior.started, prior.rounds
            wall0, compile0 = prior.wall_time, prior.compile_time
            model, model_value = prior.model, prior.model_value
            pending = prior.pending
            if prior.strategy_state is not None:
                state = prior.strategy_state
    progress = None
    if verbose and leader:
        done = [t for t in trials if t.ok]
        progress = Progress(
            n_trials,
            metric=task.metric,
            direction=task.direction,
            done=len(trials),
            best=(
                (max if sign > 0 else min)(t.value for t in done) if done else math.nan
            ),
            counts={
                s: sum(t.status == s for t in trials) for s in ("stopped", "diverged")
            },
        )
    t0 = time.perf_counter()
    clock = _Deadline(timeout, t0)
    platform = devices[0].platform if devices else jax.default_backend()
    writer = _Writer(study, platform) if study is not None and leader else None
    if recycle:
        try:
            new_trials, new_model, recycled_buckets = _tune_recycled(
                task,
                space,
                strat,
                state,
                n_trials=n_trials,
                population=population,
                seed=seed,
                early_stopping=early_stopping,
                segment_epochs=segment_epochs,
                callback=callback,
                progress=progress,
                eval_every=eval_every,
                clock=clock,
                writer=writer,
                started=started,
                rnd=rnd,
                pending=pending,
                best_so_far=model_value,
            )
        finally:
            if progress is not None:
                progress.close()
            try:
                if writer is not None:
                    writer.close()
            finally:
                if study is not None:
                    study.close()
        trials.extend(new_trials)
        if new_model is not None:
            model = new_model
        buckets.extend(recycled_buckets)
        started = n_trials
        writer = study = progress = None
    try:
        first = True  # this call's first round runs whatever the timeout
        while started < n_trials and (first or not clock.passed()):
            first = False
            t_round = time.perf_counter()
            n = min(population, n_trials - started)
            u, state = strat.ask(state, n)
            # Inactive parameters at their constant (a strategy given as an object may
            # not know the conditions); the strategy is told the points it asked.
            values = space.decode(space.canonical(u))
            hp = task.hparams(space, values)
            ids = np.arange(started, started + n)
            if progress is not None:
                progress.round_started(rnd, n)
            outcomes, reports, cand = run_population(
                task,
                hp,
                ids,
                seed=seed,
                stopper=early_stopping,
                segment_epochs=segment_epochs,
                bucketing=bucketing,
                best_so_far=model_value,
                on_segment=progress.segment if progress is not None else None,
                devices=devices,
                memory_budget=memory_budget,
                eval_every=eval_every,
            )
            buckets.extend(reports)
            new_model = None
            if cand is not None:
                model = new_model = Model(task, cand)
                model_value = cand.value
            params = space.to_python_all(values)
            # Straight from the engine's columns (no TrialOutcome records in between).
            new = [
                Trial(
                    trial_id=tid,
                    params=params[tid - started],
                    value=value,
                    status=status,
                    epochs_run=epochs_run,
                    best_epoch=best_epoch,
                    wall_time=wall,
                    round=rnd,
                    fold_values=tuple(folds),
                    curves=curves,
                )
                for tid, status, value, epochs_run, best_epoch, wall, folds, curves in zip(
                    outcomes.trial_id.tolist(),
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
            y = np.asarray([-sign * t.value if t.ok else np.nan for t in new])
            state = strat.tell(state, u, y)
            trials.extend(new)
            started += n
            if writer is not None:
                writer.commit(
                    rnd,
                    new,
                    started=started,
                    strategy_state=state,
                    wall_time=time.perf_counter() - t_round,
                    compile_time=sum(r.compile_time for r in reports),
                    model=new_model,
                    model_value=model_value,
                )
            if callback is not None:
                callback(new)
            if progress is not None:
                progress.round_finished(new)
            rnd += 1
    finally:
        if progress is not None:
            progress.close()
        try:
            if writer is not None:
                writer.close()  # the last round lands before tune() returns or raises
        finally:
            if study is not None:
                study.close()
    elapsed = time.perf_counter() - t0
    stats = {
        "wall_time": wall0 + elapsed,
        "compile_time": compile0 + sum(r.compile_time for r in buckets),
        "programs_compiled": sum(r.compile_time > 0 for r in buckets),
        "buckets": sum(r.part == 0 for r in buckets),  # a bucket's chunks count once
        "trials_per_second": sum(r.trials for r in buckets) / elapsed
        if elapsed > 0
        else math.inf,
        "strategy": strat.name,
        "resumed_trials": n_prior,
        "devices": max((r.devices for r in buckets), default=1),
        "chunks": sorted({r.chunk for r in buckets if r.chunk}),
        "timed_out": clock.fired,
    }
    if storage is not None:
        # Seconds the rounds waited for their commits (what storage cost the run).
        stats.update(
            storage=storage,
            study=study_name,
            storage_wait=writer.waited if writer is not None else 0.0,
        )
    return Results(
        trials,
        metric=task.metric,
        direction=task.direction,
        model=model,
        stats=stats,
        space=space,
    )


#: Per platform: commit each stored round on a background thread while the next one
#: trains (see ``_Writer``), or in the round loop. Not on a CPU, where training and the
#: writer share the cores: there the writer gained nothing in 2-core sweeps, and lost
#: ~0.3 s in 8 rounds of 4,096 trials when XLA ran on one thread (benchmarks/RESULTS.md).
COMMIT_IN_BACKGROUND = {"cpu": False, "default": True}


class _Writer:
    """Commits a study's rounds on a background thread, in order and one at a time,
    so that round k is written while round k + 1 trains.

    A round's commit costs ~33 us per trial (``benchmarks/storage.py``): 0.14 s for
    4,096 trials, against ~0.3 s to train them on an H200, with the device idle while
    the host wrote. What is stored does not change: each round lands whole or not at
    all, in order, and :meth:`close` waits for the last one (also when the loop
    raised). A failed commit raises at the next round's commit or at ``close``.
    """

    def __init__(self, study, platform: str):
        self._study = study
        self._background = COMMIT_IN_BACKGROUND.get(
            platform, COMMIT_IN_BACKGROUND["default"]
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="jaxhp-storage"
        )
        self._pending: concurrent.futures.Future | None = None
        self.waited = 0.0  # seconds the round loop spent waiting for a commit

    def commit(self, *args, **kwargs) -> None:
        self.wait()
        if not self._background:  # the loop waits for the whole commit
            with self._waiting():
                self._study.commit_round(*args, **kwargs)
            return
        self._pending = self._pool.submit(self._study.commit_round, *args, **kwargs)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            with self._waiting():
                pending.result()  # the commit's own error, if it failed

    @contextlib.contextmanager
    def _waiting(self):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.waited += time.perf_counter() - t

    def store_model(self, model, value: float) -> None:
        self.wait()
        with self._waiting():
            self._study.store_model(model, value)

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


def _fingerprint(task: Task) -> str:
    """A hash of the task's prepared data (a resumed study must train on the same)."""
    h = hashlib.sha256()
    d = task.data
    for a in (d.x_train, d.y_train, d.x_val, d.y_val, d.n_train):
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(a.tobytes())
    h.update(f"{task.metric}/{task.direction}".encode())
    return h.hexdigest()[:16]


_ADDED_KEYS = {"eval_every": 1, "enqueue": "[]", "recycle": False}


def _open_study(storage, name, task, config, metadata, *, template, leader):
    """The study at ``storage``, checked before anything trains: writable, written by
    no other live process, and (when it exists) stored with the same settings. Returns
    it with what it holds (None for a new study)."""
    from jaxhp.storage import Study

    study = Study(storage, name)
    try:
        prior = None
        if study.exists:
            _check_same_study(study, config, storage, name)
            if leader:
                study.claim()
            prior = study.load(strategy_template=template, with_state=True)
        elif leader:
            study.create(
                metric=task.metric,
                direction=task.direction,
                config={**config, "metadata": dict(metadata or {})},
            )
            study.claim()
        return study, prior
    except BaseException:
        study.close()
        raise


def _check_same_study(study, config: dict, storage: str, name: str) -> None:
    stored = study.config or {}
    for key, what in (
        ("data", "data"),
        ("space", "search space"),
        ("strategy", "strategy"),
        ("strategy_options", "strategy options"),
        ("seed", "seed"),
        ("early_stopping", "early stopping"),
        ("eval_every", "validation interval (eval_every)"),
        ("task", "task"),
        ("enqueue", "enqueued configurations"),
        ("recycle", "recycle setting"),
    ):
        # Keys added after a study was stored default to the behaviour it ran with.
        before = stored.get(key, _ADDED_KEYS.get(key))
        if before != json.loads(json.dumps(config[key])):
            raise StudyMismatchError(
                f"storage {storage!r} already holds study {name!r} with a different "
                f"{what} ({before!r}, now {config[key]!r}): resume it with the "
                "same settings, or pick another study_name or storage path"
            )


def _extremes(space: Space) -> dict[str, np.ndarray]:
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


class _Deadline:
    """``tune``'s ``timeout``: whether it has passed, the same answer in every process
    (each trains its shard of every round, so all must stop at the same one)."""

    def __init__(self, timeout: float | None, t0: float):
        self.at = None if timeout is None else t0 + timeout
        self.fired = False  # it stopped the study short

    def passed(self) -> bool:
        if self.at is None:
            return False
        late = np.asarray(time.perf_counter() >= self.at)
        if jax.process_count() > 1:  # process 0's clock decides for all
            from jax.experimental import multihost_utils

            late = multihost_utils.broadcast_one_to_all(late)
        self.fired = self.fired or bool(late)
        return bool(late)


def _tune_recycled(
    task,
    space,
    strat,
    state,
    *,
    n_trials,
    population,
    seed,
    early_stopping,
    segment_epochs,
    callback,
    progress,
    eval_every,
    clock,
    writer=None,
    started=0,
    rnd=0,
    pending=None,
    best_so_far=-math.inf,
):
    """A recycled stream. With a ``writer``, every batch of finished trials is
    committed as it finishes, with the strategy state and the trials in flight (ids
    and points); a resumed stream (``started``, ``pending`` from the store) restarts
    those first, from scratch, with their own ids and points."""
    from jaxhp.engine import run_recycled

    sign = 1.0 if task.direction == "maximize" else -1.0
    trials: list[Trial] = []
    in_flight: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
    # Restarted first: (ids, points) of trials in flight when the stream was stored.
    queue = (
        [np.zeros(0, np.int64), np.zeros((0, space.dim))]
        if pending is None
        else [np.asarray(pending[0], np.int64), np.asarray(pending[1], np.float64)]
    )
    box = {
        "state": state,
        "started": started,
        "commits": rnd,
        "since": time.perf_counter(),  # the last commit: rounds' wall times add up
    }
    first_call = [True]

    def source(n: int):
        ids_q, u_q = queue
        k = min(n, len(ids_q))
        n_new = min(n - k, n_trials - box["started"])
        # No refills past the timeout (the stream's first trials always start).
        if not first_call[0] and n > 0 and clock.passed():
            k = n_new = 0
        first_call[0] = False
        parts_u, parts_ids = [u_q[:k]], [ids_q[:k]]
        queue[:] = [ids_q[k:], u_q[k:]]
        if n_new > 0:
            u_new, box["state"] = strat.ask(box["state"], n_new)
            parts_u.append(np.asarray(u_new, np.float64))
            parts_ids.append(np.arange(box["started"], box["started"] + n_new))
            box["started"] += n_new
        ids = np.concatenate(parts_ids).astype(np.int64)
        if not len(ids):
            return np.zeros(0, np.int64), {}
        u = np.concatenate(parts_u)
        values = space.decode(space.canonical(u))
        params = space.to_python_all(values)
        for j, tid in enumerate(ids.tolist()):
            in_flight[tid] = (u[j], params[j])
        if progress is not None:
            progress.running = len(in_flight)
        return ids, task.hparams(space, values)

    def on_finish(outcomes, boundary):
        new = []
        for o in outcomes:
            _, params = in_flight[o.trial_id]
            new.append(
                Trial(
                    trial_id=o.trial_id,
                    params=params,
                    value=o.value,
                    status=o.status,
                    epochs_run=o.epochs_run,
                    best_epoch=o.best_epoch,
                    wall_time=o.wall_time,
                    round=boundary,
                    fold_values=tuple(np.asarray(o.fold_values, float).tolist()),
                    curves=o.curves,
                )
            )
        u = np.stack([in_flight.pop(t.trial_id)[0] for t in new])
        y = np.asarray([-sign * t.value if t.ok else np.nan for t in new])
        box["state"] = strat.tell(box["state"], u, y)
        trials.extend(new)
        if writer is not None:
            # Not yet started from the stored queue, then those in slots: all restart.
            ids = [*queue[0].tolist(), *in_flight]
            points = [*queue[1], *(in_flight[t][0] for t in in_flight)]
            writer.commit(
                box["commits"],
                new,
                started=box["started"],
                strategy_state=box["state"],
                wall_time=time.perf_counter() - box["since"],
                compile_time=0.0,
                pending=(
                    np.asarray(ids, np.int64),
                    np.asarray(points, np.float64).reshape(len(ids), space.dim),
                ),
            )
            box["commits"] += 1
            box["since"] = time.perf_counter()
        if callback is not None:
            callback(new)
        if progress is not None:
            progress.rnd = boundary
            progress.round_finished(new)
            progress.running = len(in_flight)

    report, best = run_recycled(
        task,
        task.hparams(space, _extremes(space)),
        source,
        on_finish,
        slots=population,
        seed=seed,
        stopper=early_stopping,
        segment_epochs=segment_epochs,
        on_segment=progress.segment if progress is not None else None,
        eval_every=eval_every,
        best_so_far=best_so_far,
    )
    model = Model(task, best) if best is not None else None
    if writer is not None:
        writer.wait()
        if model is not None:
            writer.store_model(model, best.value)
    return trials, model, [report]
