"""SQLite persistence of a study (standard-library ``sqlite3``, WAL mode) and resume.

A study is stored as it runs: after every round, in one transaction, its trials (with
hyperparameters, status, timing and per-epoch curves), the strategy's state after it was
told the round, and the best trial's trained model when it improved (on accelerators
``tune`` commits a round on a writer thread while the next one trains). A process killed
at any moment leaves the database at the end of its last committed round; resuming
re-runs the interrupted round from the stored strategy state, and since a trial's result
depends only on ``(seed, trial_id, hyperparameters)``, the resumed study ends with
exactly the trials and results of an uninterrupted one. With ``recycle=True`` every
finished trial is committed as it finishes, with the trials then in flight; resuming
restarts those from scratch.

A study is data: reading one runs no code. Nothing is unpickled or evaluated; JSON and
typed columns hold everything but arrays, and arrays are ``.npz`` files read with
``np.load(allow_pickle=False)`` (see :mod:`jaxhp.serial`). The best model's Trainable is
recorded as ``{"import": "module:QualName", "fields": {...}}`` and imported only when
its weights are used (``predict``); ``show``, ``export`` and ``report`` never import it.

Here live :class:`Study` (one named study in a database: reading, the one writer,
committing rounds) and :func:`load`. The tables, their version and the conversion of
rows are :mod:`jaxhp.study_format`; converting a database of an older jaxhp (pickles)
is :mod:`jaxhp.migrate` (``jaxhp migrate OLD NEW --trust``).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from jaxhp import serial
from jaxhp.results import Model, Results, Trial
from jaxhp.space import Space, SpaceError
from jaxhp.study_format import (
    SCHEMA,
    SCHEMA_VERSION,
    StorageError,
    _check_file,
    _check_version,
    _connect_readonly,
    _curves_from_rows,
    _flat_curves,
    _num,
    _real,
    _series_dtype,
    _trial_from_row,
)

__all__ = ["Study", "StoredRound", "StorageError", "load", "SCHEMA_VERSION"]

# Moved to jaxhp.migrate, still importable from here; ``_Key`` because old pickles name
# it ``jaxhp.storage._Key``. Looked up on first use: jaxhp.migrate imports this module.
_MIGRATE_NAMES = ("migrate", "space_from_repr", "_Key")


def __getattr__(name: str) -> Any:
    if name in _MIGRATE_NAMES:
        from jaxhp import migrate

        return getattr(migrate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: A writer on another host that has not committed for this long is taken to be gone.
STALE_WRITER_SECONDS = 3600.0


class StudyMismatchError(StorageError, ValueError):
    """A stored study resumed with other settings (data, space, strategy, ...): the
    caller's arguments conflict with the storage, hence a ``ValueError`` too."""


@dataclass
class StoredRound:
    """What a study holds after its last committed round."""

    trials: list[Trial]
    rounds: int  # rounds committed
    started: int  # trials started so far (a recycled stream: with those in flight)
    wall_time: float
    compile_time: float
    strategy_state: Any  # None when no round was committed (or it was not asked for)
    model: Model | None
    model_value: float  # oriented (higher is better), -inf without a model
    pending: tuple[np.ndarray, np.ndarray] | None = None  # in flight: ids [k], u [k, D]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


class Study:
    """One named study in a SQLite database.

    ``readonly=False`` (a sweep) creates the database if missing and checks that it
    can be written; ``readonly=True`` (``show``, ``export``, ``report``, ``predict``,
    :func:`load`) opens it so that nothing can be written, also in a read-only folder
    or while a sweep writes it.
    """

    def __init__(
        self, path: str | os.PathLike, name: str = "default", *, readonly: bool = False
    ):
        self.path = os.fspath(path)
        self.name = name
        self.readonly = readonly
        self._writer = False  # this process holds the study's writer row
        if readonly:
            self._db = _connect_readonly(self.path)
            if not _check_version(self._db, self.path):
                self._db.close()
                raise StorageError(f"storage: {self.path!r} holds no study yet")
        else:
            self._db = self._open_for_writing()
        try:
            row = self._db.execute(
                "SELECT study_id, metric, direction, config FROM studies "
                "WHERE name = ?",
                (name,),
            ).fetchone()
        except sqlite3.DatabaseError as e:
            raise StorageError(f"storage: {self.path!r}: {e}") from None
        self.study_id: int | None = row[0] if row else None
        self.metric = row[1] if row else None
        self.direction = row[2] if row else None
        self.config: dict[str, Any] | None = None
        if row:
            where = f"storage: {self.path!r}, study {name!r}"
            try:
                self.config = json.loads(row[3])
            except (TypeError, ValueError):
                self.config = None
            if not isinstance(self.config, dict):
                raise StorageError(f"{where}: its config is not a JSON object")
            if not isinstance(self.metric, str) or self.direction not in (
                "maximize",
                "minimize",
            ):
                raise StorageError(f"{where}: unreadable metric or direction")

    def _open_for_writing(self) -> sqlite3.Connection:
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise StorageError(f"storage: directory {parent!r} does not exist")
        _check_file(self.path)
        try:
            # Rounds may be committed from tune()'s writer thread (one at a time,
            # never while this thread uses the connection).
            db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            known = _check_version(db, self.path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if not known:
                db.executescript(
                    f"BEGIN IMMEDIATE; {SCHEMA} "
                    f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                )
            else:
                db.executescript(SCHEMA)  # tables added since (writers)
        except StorageError:
            raise
        except sqlite3.DatabaseError as e:
            raise StorageError(
                f"storage: cannot write {self.path!r} ({e}); give a path in a "
                "writable folder"
            ) from None
        return db

    # ---------------------------------------------------------------- reading
    @staticmethod
    def names(path: str | os.PathLike) -> list[str]:
        """Names of the studies stored at ``path``."""
        path = os.fspath(path)
        db = _connect_readonly(path)
        try:
            if not _check_version(db, path):
                return []
            return [r[0] for r in db.execute("SELECT name FROM studies ORDER BY 1")]
        except sqlite3.DatabaseError as e:
            raise StorageError(f"storage: {path!r}: {e}") from None
        finally:
            db.close()

    @property
    def exists(self) -> bool:
        return self.study_id is not None

    def space(self) -> Space | None:
        """The stored space (None for a study stored without one)."""
        data = (self.config or {}).get("space")
        if data is None:
            return None
        try:
            return Space.from_data(data)
        except (SpaceError, TypeError) as e:
            raise StorageError(
                f"storage: {self.path!r}, study {self.name!r}: unreadable stored "
                f"space ({e})"
            ) from None

    def create(self, *, metric: str, direction: str, config: dict[str, Any]) -> None:
        try:
            with self._transaction():
                cur = self._db.execute(
                    "INSERT INTO studies (name, created, metric, direction, config) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (self.name, time.time(), metric, direction, json.dumps(config)),
                )
        except sqlite3.IntegrityError:
            raise StorageError(
                f"storage: study {self.name!r} in {self.path!r} was just created by "
                "another process; wait for it, or use another study name"
            ) from None
        except sqlite3.DatabaseError as e:
            raise StorageError(
                f"storage: cannot write {self.path!r} ({e}); nothing was trained"
            ) from None
        self.study_id = cur.lastrowid
        self.metric, self.direction, self.config = metric, direction, config

    def load(
        self,
        *,
        strategy_template: Any = None,
        with_state: bool = False,
        with_model: bool = True,
        trainable: Any = None,
    ) -> StoredRound:
        """Every committed trial, and the best model (``with_model``) and the last
        strategy state (``with_state``; NamedTuples of a custom strategy are rebuilt
        from the types in ``strategy_template``)."""
        if not self.exists:
            raise StorageError(f"storage: no study {self.name!r} in {self.path!r}")
        where = f"storage: {self.path!r}, study {self.name!r}"
        rows = self._read_rows(with_state, where)
        curves = _curves_from_rows(rows.legacy, rows.series, where)
        trials = [_trial_from_row(r, curves.get(r[0], {}), where) for r in rows.trials]
        state, pending = None, None
        if rows.state is not None:
            state, pending = _strategy_from_blob(rows.state, strategy_template, where)
        model, model_value = None, -math.inf
        if rows.model is not None:
            model_value = _real(rows.model[0], f"{where}: the stored model's value")
            if with_model:
                model = _model_from_row(rows.model, trainable, where)
        try:
            counts = [int(rows.rounds[0]), int(rows.rounds[1] or 0)]
            times = [float(rows.rounds[2] or 0.0), float(rows.rounds[3] or 0.0)]
        except (TypeError, ValueError):
            raise StorageError(f"{where}: unreadable rounds table") from None
        return StoredRound(
            trials=trials,
            rounds=counts[0],
            started=counts[1],
            wall_time=times[0],
            compile_time=times[1],
            strategy_state=state,
            model=model,
            model_value=model_value,
            pending=pending,
        )

    def _read_rows(self, with_state: bool, where: str) -> _StudyRows:
        """The study's rows, read in one consistent snapshot."""
        sid = self.study_id
        db = self._db
        try:
            with self._transaction(write=False):
                rounds = db.execute(
                    "SELECT COUNT(*), MAX(started), SUM(wall_time), SUM(compile_time) "
                    "FROM rounds WHERE study_id = ?",
                    (sid,),
                ).fetchone()
                blob = (
                    db.execute(
                        "SELECT strategy_state FROM rounds WHERE study_id = ? "
                        "ORDER BY round DESC LIMIT 1",
                        (sid,),
                    ).fetchone()
                    if with_state
                    else None
                )
                trials = db.execute(
                    "SELECT trial_id, round, status, value, epochs_run, best_epoch, "
                    "wall_time, params, fold_values FROM trials WHERE study_id = ? "
                    "ORDER BY trial_id",
                    (sid,),
                ).fetchall()
                series = db.execute(
                    "SELECT trial_id, name, dtype, data FROM series WHERE study_id = ?",
                    (sid,),
                ).fetchall()
                legacy = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' "
                    "AND name = 'curves'"
                ).fetchone()
                legacy_rows = (
                    db.execute(
                        "SELECT trial_id, name, epoch, value FROM curves "
                        "WHERE study_id = ? ORDER BY trial_id, name, epoch",
                        (sid,),
                    ).fetchall()
                    if legacy
                    else []
                )
                model = db.execute(
                    "SELECT value, blob, trial_id FROM models WHERE study_id = ?",
                    (sid,),
                ).fetchone()
        except sqlite3.DatabaseError as e:
            raise StorageError(f"{where}: {e}") from None
        return _StudyRows(
            rounds, blob[0] if blob else None, trials, series, legacy_rows, model
        )

    # ---------------------------------------------------------------- writing
    def claim(self) -> None:
        """Become the study's one writer, before anything trains: refused (naming the
        process) while another live process writes it; a writer that died (its pid
        gone on this host, or silent for ``STALE_WRITER_SECONDS`` elsewhere) is
        replaced. Also proves the database writable."""
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        try:
            with self._transaction():
                row = self._db.execute(
                    "SELECT pid, host, started, heartbeat FROM writers "
                    "WHERE study_id = ?",
                    (self.study_id,),
                ).fetchone()
                if row is not None and (row[0], row[1]) != (pid, host):
                    alive = (
                        _pid_alive(int(row[0]))
                        if row[1] == host
                        else now - float(row[3]) < STALE_WRITER_SECONDS
                    )
                    if alive:
                        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(row[2]))
                        raise StorageError(
                            f"storage: study {self.name!r} in {self.path!r} is being "
                            f"written by process {row[0]} on {row[1]} (since {since}); "
                            "wait for it to finish (or stop it), or use another "
                            "study name or storage path"
                        )
                self._db.execute(
                    "INSERT OR REPLACE INTO writers VALUES (?, ?, ?, ?, ?)",
                    (self.study_id, pid, host, now, now),
                )
        except sqlite3.DatabaseError as e:
            raise StorageError(
                f"storage: cannot write {self.path!r} ({e}); nothing was trained"
            ) from None
        self._writer = True

    def release(self) -> None:
        """Give up the writer row (the sweep is over)."""
        if not self._writer:
            return
        self._writer = False
        try:
            with self._transaction():
                self._db.execute(
                    "DELETE FROM writers WHERE study_id = ? AND pid = ?",
                    (self.study_id, os.getpid()),
                )
        except sqlite3.DatabaseError:  # a full disk: the row goes stale by itself
            pass

    def commit_round(
        self,
        rnd: int,
        trials: Sequence[Trial],
        *,
        started: int,
        strategy_state: Any,
        wall_time: float,
        compile_time: float,
        model: Model | None = None,
        model_value: float = -math.inf,
        pending: tuple[Any, Any] | None = None,
    ) -> None:
        """Store one finished round atomically: all of it, or (if killed) none of it.
        ``pending``: a recycled stream's trials in flight (ids, points), restarted on
        resume."""
        sid = self.study_id
        if pending is None:
            pending = (np.zeros(0, np.int64), np.zeros((0, 0)))
        try:
            state_blob = serial.dump_tree(
                {"strategy": strategy_state, "pending": list(pending)},
                "strategy state",
            )
        except serial.SerialError as e:
            raise StorageError(
                f"storage: the strategy state cannot be stored ({e})"
            ) from None
        model_blob = None
        if model is not None:
            model_blob = model.to_record()
        trial_rows = [
            (
                sid,
                t.trial_id,
                t.round,
                t.status,
                _num(t.value),
                t.epochs_run,
                t.best_epoch,
                t.wall_time,
                json.dumps(t.params),
                json.dumps([_num(v) for v in t.fold_values]),
            )
            for t in trials
        ]
        series_rows = [
            (sid, t.trial_id, name, dt, np.asarray(series, dt).tobytes())
            for t in trials
            for name, series in _flat_curves(t.curves).items()
            for dt in [_series_dtype(series)]
        ]
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    trial_rows,
                )
                self._db.executemany(
                    "INSERT INTO series VALUES (?, ?, ?, ?, ?)", series_rows
                )
                # Only the newest strategy state is needed to resume.
                self._db.execute(
                    "UPDATE rounds SET strategy_state = NULL WHERE study_id = ?",
                    (sid,),
                )
                self._db.execute(
                    "INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        sid,
                        rnd,
                        started,
                        wall_time,
                        compile_time,
                        time.time(),
                        state_blob,
                    ),
                )
                if model_blob is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?)",
                        (sid, model.trial_id, model_value, model_blob),
                    )
                if self._writer:
                    self._db.execute(
                        "UPDATE writers SET heartbeat = ? WHERE study_id = ?",
                        (time.time(), sid),
                    )
        except sqlite3.DatabaseError as e:
            raise StorageError(
                f"storage: could not store round {rnd} in {self.path!r} ({e}); the "
                "rounds before it are stored: free space and resume"
            ) from None

    def close(self) -> None:
        try:
            self.release()
        finally:
            self._db.close()

    def _transaction(self, write: bool = True):
        return _Transaction(self._db, write and not self.readonly)


class _Transaction:
    """``BEGIN IMMEDIATE`` (a reader: ``BEGIN``) ... ``COMMIT`` (``ROLLBACK`` on
    error)."""

    def __init__(self, db: sqlite3.Connection, write: bool = True):
        self.db = db
        self.write = write

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if self.db.in_transaction:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


class _StudyRows(NamedTuple):
    """A study's rows as :meth:`Study.load` reads them."""

    rounds: tuple  # (count, max started, sum wall_time, sum compile_time)
    state: bytes | None  # the newest round's strategy state
    trials: list[tuple]
    series: list[tuple]
    legacy: list[tuple]  # an older format's curves table, a row per epoch
    model: tuple | None  # (value, blob, trial_id)


def _strategy_from_blob(
    blob: bytes, template: Any, where: str
) -> tuple[Any, tuple[np.ndarray, Any] | None]:
    """A stored strategy state and the trials then in flight (None: none)."""
    try:
        stored = serial.load_tree(blob, template=template)
        if not isinstance(stored, dict) or "strategy" not in stored:
            raise serial.SerialError("not a strategy record")
        ids, u = stored.get("pending") or (np.zeros(0, np.int64), None)
        pending = (np.asarray(ids, np.int64), u) if len(ids) else None
        return stored["strategy"], pending
    except (serial.SerialError, TypeError, ValueError) as e:
        raise StorageError(
            f"{where}: the stored strategy state is unreadable ({e}); the "
            "trials are intact (`jaxhp show`, `export`)"
        ) from None


def _model_from_row(row: tuple, trainable: Any, where: str) -> Model:
    try:
        return Model.from_record(row[1], trainable=trainable)
    except serial.SerialError as e:
        raise StorageError(
            f"{where}: the stored model (trial {row[2]}) is unreadable ({e})"
        ) from None


def load(
    path: str | os.PathLike,
    study: str | None = None,
    *,
    trainable: Any = None,
    with_model: bool = True,
) -> Results:
    """The results of a stored study: trials, best trial and its model.

    The database is opened read-only and no code stored in it runs. The best model's
    Trainable is imported (by the module path the study recorded) only when its
    weights are used; pass ``trainable`` (an instance, or its class, then built from
    the stored fields) for one that cannot be imported here, e.g. one defined in a
    script's ``__main__``. ``with_model=False`` skips the model (a table needs none).

    Example:
        >>> res = jaxhp.load("sweep.db")
        >>> res.best_params, res.predict(X_new)
    """
    names = Study.names(path)
    if study is None:
        if len(names) != 1:
            raise StorageError(
                f"storage: {os.fspath(path)!r} holds studies {names}; name one"
            )
        study = names[0]
    s = Study(path, study, readonly=True)
    try:
        if not s.exists:
            raise StorageError(
                f"storage: no study {study!r} in {os.fspath(path)!r} (it holds {names})"
            )
        stored = s.load(with_model=with_model, trainable=trainable)
        space = s.space()
    finally:
        s.close()
    return Results(
        stored.trials,
        metric=s.metric,
        direction=s.direction,
        model=stored.model,
        space=space,
        stats={
            "wall_time": stored.wall_time,
            "compile_time": stored.compile_time,
            "rounds": stored.rounds,
            "strategy": (s.config or {}).get("strategy"),
            "storage": os.fspath(path),
            "study": study,
        },
    )
