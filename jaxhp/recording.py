"""A sweep recorded in a study (``storage=``): resume, checks, and the writer.

:class:`StudyRecorder` is an observer of a :class:`~jaxhp.sweep.Sweep`: it opens (or
creates) the study, refuses to resume one made with other settings, hands the sweep
what the study already holds (:class:`~jaxhp.sweep.Prior`), and commits every batch of
finished trials, atomically, before the next one starts (on accelerators while the
next one trains).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxhp.storage import StudyMismatchError
from jaxhp.sweep import Observer, Prior, RoundRecord, Sweep
from jaxhp.tasks.base import Task

__all__ = ["StudyRecorder"]


class _Writer:
    """Commits a study's rounds on a background thread, in order and one at a time,
    so that round k is written while round k + 1 trains.

    A round's commit costs ~33 us per trial (``benchmarks/storage.py``): 0.14 s for
    4,096 trials, against ~0.3 s to train them on an H200, with the device idle while
    the host wrote. What is stored does not change: each round lands whole or not at
    all, in order, and :meth:`close` waits for the last one (also when the loop
    raised). A failed commit raises at the next round's commit or at ``close``.
    """

    def __init__(self, study, background: bool):
        self._study = study
        self._background = background  # EngineOptions.commit_in_background
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
        if before != json.loads(json.dumps(config[key])):  # as stored: JSON
            raise StudyMismatchError(
                f"storage {storage!r} already holds study {name!r} with a different "
                f"{what} ({before!r}, now {config[key]!r}): resume it with the "
                "same settings, or pick another study_name or storage path"
            )


def study_config(sweep: Sweep) -> dict[str, Any]:
    """What a stored study records of a sweep, as data, and checks again when it
    resumes."""
    return {
        "space": sweep.given_space.to_data(),
        "strategy": sweep.strategy.name,
        "strategy_options": repr(sweep.strategy_options),
        "seed": sweep.seed,
        "early_stopping": repr(sweep.early_stopping),
        "eval_every": int(sweep.eval_every),
        "task": type(sweep.task).__name__,
        "data": _fingerprint(sweep.task),
        "enqueue": repr(sweep.enqueue),
        "recycle": sweep.recycle,
    }


class StudyRecorder(Observer):
    """Records a sweep in study ``name`` of the SQLite database ``storage``.

    Opening checks, before anything trains, that the storage can be written, that no
    other live process writes the study (it names the one that does), and that a
    stored study was made with the same settings; ``prior`` then holds what it had
    (None for a new study). Only process 0 of several writes.
    """

    def __init__(
        self,
        storage: str,
        name: str,
        sweep: Sweep,
        metadata: Mapping[str, Any] | None = None,
    ):
        from jaxhp.storage import Study

        self.storage, self.name = storage, name
        config = study_config(sweep)
        leader = jax.process_index() == 0
        self.study = Study(storage, name)
        self.prior: Prior | None = None
        try:
            if self.study.exists:
                _check_same_study(self.study, config, storage, name)
                if leader:
                    self.study.claim()
                template = sweep.strategy.init(jax.random.key(sweep.seed))
                stored = self.study.load(strategy_template=template, with_state=True)
                self.prior = Prior(
                    trials=list(stored.trials),
                    started=stored.started,
                    rounds=stored.rounds,
                    wall_time=stored.wall_time,
                    compile_time=stored.compile_time,
                    model=stored.model,
                    model_value=stored.model_value,
                    strategy_state=stored.strategy_state,
                    pending=stored.pending,
                )
            elif leader:
                self.study.create(
                    metric=sweep.task.metric,
                    direction=sweep.task.direction,
                    config={**config, "metadata": dict(metadata or {})},
                )
                self.study.claim()
        except BaseException:
            self.study.close()
            raise
        background = sweep.options.commit_in_background
        self.writer = _Writer(self.study, background) if leader else None

    def trials_finished(self, trials, record: RoundRecord) -> None:
        if self.writer is not None:
            extra = {} if record.pending is None else {"pending": record.pending}
            self.writer.commit(
                record.round,
                trials,
                started=record.started,
                strategy_state=record.strategy_state,
                wall_time=record.wall_time,
                compile_time=record.compile_time,
                model=record.model,
                model_value=record.model_value,
                **extra,
            )

    def close(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()  # the last round lands before the sweep returns
        finally:
            self.study.close()

    def stats(self) -> dict[str, Any]:
        """Where the study is, and the seconds the rounds waited for their commits
        (what storage cost the run)."""
        return {
            "storage": self.storage,
            "study": self.name,
            "storage_wait": self.writer.waited if self.writer is not None else 0.0,
        }
