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

Tables (one database can hold several studies, by name; ``PRAGMA user_version`` is the
format's version, ``SCHEMA_VERSION``):

- ``studies(study_id, name, created, metric, direction, config)``: ``config`` is JSON
  (the space as :meth:`Space.to_data`, strategy, seed, ... and, for studies started
  from the command line, the whole config file, so that ``jaxhp resume`` can rebuild
  the task).
- ``rounds(study_id, round, started, wall_time, compile_time, committed,
  strategy_state)``: ``strategy_state`` (newest round only) is an ``.npz`` tree of
  ``{"strategy": state, "pending": [trial ids, points]}`` (``pending``: a recycled
  stream's trials in flight).
- ``trials(study_id, trial_id, round, status, value, epochs_run, best_epoch, wall_time,
  params, fold_values)``: ``params`` and ``fold_values`` are JSON.
- ``series(study_id, trial_id, name, dtype, data)``: one row per trial and per-epoch
  series (``train_loss``, ``value`` (the metric), ``value_fold<k>``, other metrics);
  ``data`` holds the series as raw little-endian numbers of ``dtype`` (``"<f4"`` or
  ``"<f8"``): ``np.frombuffer(data, dtype)``, NaN where a trial was not validated.
- ``models(study_id, trial_id, value, blob)``: the best trial's model, an ``.npz`` tree
  (:meth:`jaxhp.results.Model.to_record`): its state's leaves by pytree path, the
  Trainable's import path and fields, input scaling and class labels.
- ``writers(study_id, pid, host, started, heartbeat)``: the process writing a study;
  a second one is refused while it lives.

Databases of jaxhp before ``SCHEMA_VERSION`` 2 held pickles; they are refused, and
``jaxhp migrate OLD NEW --trust`` converts one (it unpickles: only for files you trust).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxhp import serial
from jaxhp.results import STATUSES, Model, Results, Trial
from jaxhp.space import Space, SpaceError

__all__ = ["Study", "StoredRound", "StorageError", "load", "SCHEMA_VERSION"]

#: The stored format's version (``PRAGMA user_version``): 2 is data only.
SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    metric TEXT NOT NULL,
    direction TEXT NOT NULL,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    study_id INTEGER NOT NULL REFERENCES studies(study_id),
    round INTEGER NOT NULL,
    started INTEGER NOT NULL,
    wall_time REAL NOT NULL,
    compile_time REAL NOT NULL,
    committed REAL NOT NULL,
    strategy_state BLOB,
    PRIMARY KEY (study_id, round)
);
CREATE TABLE IF NOT EXISTS trials (
    study_id INTEGER NOT NULL REFERENCES studies(study_id),
    trial_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    status TEXT NOT NULL,
    value REAL,
    epochs_run INTEGER NOT NULL,
    best_epoch INTEGER NOT NULL,
    wall_time REAL NOT NULL,
    params TEXT NOT NULL,
    fold_values TEXT NOT NULL,
    PRIMARY KEY (study_id, trial_id)
);
CREATE TABLE IF NOT EXISTS series (
    study_id INTEGER NOT NULL,
    trial_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    dtype TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (study_id, trial_id, name)
);
CREATE TABLE IF NOT EXISTS models (
    study_id INTEGER PRIMARY KEY,
    trial_id INTEGER NOT NULL,
    value REAL NOT NULL,
    blob BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS writers (
    study_id INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL
);
"""

#: A writer on another host that has not committed for this long is taken to be gone.
STALE_WRITER_SECONDS = 3600.0

_SERIES_DTYPES = ("<f4", "<f8")


class StorageError(RuntimeError):
    """A storage path or study that cannot be used as asked."""


class StudyMismatchError(StorageError, ValueError):
    """A stored study resumed with other settings (data, space, strategy, ...): the
    caller's arguments conflict with the storage, hence a ``ValueError`` too."""


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


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


def _uri(path: str, **query: str) -> str:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return f"file:{urllib.request.pathname2url(os.path.abspath(path))}?{q}"


def _check_file(path: str) -> None:
    if os.path.isdir(path):
        raise StorageError(f"storage: {path!r} is a folder, not a study database")


def _connect_readonly(path: str) -> sqlite3.Connection:
    """A connection that cannot write: ``mode=ro``, or ``immutable=1`` where SQLite
    cannot make a WAL database's shared-memory file (a read-only folder)."""
    if not os.path.exists(path):
        raise StorageError(f"storage: no database at {path!r}")
    _check_file(path)
    try:
        db = sqlite3.connect(_uri(path, mode="ro"), uri=True, timeout=60)
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.DatabaseError as e:
        if "not a database" in str(e) or "malformed" in str(e):
            raise StorageError(
                f"storage: {path!r} is not a usable SQLite database ({e})"
            ) from None
    try:
        db = sqlite3.connect(_uri(path, mode="ro", immutable="1"), uri=True)
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.DatabaseError as e:
        raise StorageError(
            f"storage: {path!r} is not a usable SQLite database ({e})"
        ) from None


def _check_version(db: sqlite3.Connection, path: str) -> bool:
    """Whether the database holds jaxhp's tables; refuses another format's."""
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            r[0]
            for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as e:
        raise StorageError(
            f"storage: {path!r} is not a usable SQLite database ({e})"
        ) from None
    if "studies" not in tables:
        if tables:
            raise StorageError(f"storage: {path!r} is not a jaxhp study database")
        return False
    if version < SCHEMA_VERSION:
        raise StorageError(
            f"storage: {path!r} was written by an older jaxhp, which stored pickles; "
            f"it is not opened (reading it could run code). If you trust it, convert "
            f"it with `jaxhp migrate {path} NEW.db --trust`"
        )
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"storage: {path!r} was written by a newer jaxhp (format {version}, this "
            f"one reads {SCHEMA_VERSION}): upgrade jaxhp"
        )
    return True


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
        sid = self.study_id
        where = f"storage: {self.path!r}, study {self.name!r}"
        try:
            with self._transaction(write=False):  # one consistent snapshot
                rnd = self._db.execute(
                    "SELECT COUNT(*), MAX(started), SUM(wall_time), SUM(compile_time) "
                    "FROM rounds WHERE study_id = ?",
                    (sid,),
                ).fetchone()
                blob = (
                    self._db.execute(
                        "SELECT strategy_state FROM rounds WHERE study_id = ? "
                        "ORDER BY round DESC LIMIT 1",
                        (sid,),
                    ).fetchone()
                    if with_state
                    else None
                )
                trial_rows = self._db.execute(
                    "SELECT trial_id, round, status, value, epochs_run, best_epoch, "
                    "wall_time, params, fold_values FROM trials WHERE study_id = ? "
                    "ORDER BY trial_id",
                    (sid,),
                ).fetchall()
                series_rows = self._db.execute(
                    "SELECT trial_id, name, dtype, data FROM series WHERE study_id = ?",
                    (sid,),
                ).fetchall()
                legacy = self._db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' "
                    "AND name = 'curves'"
                ).fetchone()
                legacy_rows = (
                    self._db.execute(
                        "SELECT trial_id, name, epoch, value FROM curves "
                        "WHERE study_id = ? ORDER BY trial_id, name, epoch",
                        (sid,),
                    ).fetchall()
                    if legacy
                    else []
                )
                model_row = self._db.execute(
                    "SELECT value, blob, trial_id FROM models WHERE study_id = ?",
                    (sid,),
                ).fetchone()
        except sqlite3.DatabaseError as e:
            raise StorageError(f"{where}: {e}") from None
        curves: dict[int, dict[str, Any]] = {}
        for tid, name, _, value in legacy_rows:
            curves.setdefault(tid, {}).setdefault(name, []).append(_nan(value))
        for tid, name, dtype, data in series_rows:
            if dtype not in _SERIES_DTYPES or not isinstance(data, bytes):
                raise StorageError(
                    f"{where}: trial {tid}'s series {name!r} is unreadable "
                    f"(dtype {dtype!r})"
                )
            if len(data) % np.dtype(dtype).itemsize:
                raise StorageError(
                    f"{where}: trial {tid}'s series {name!r} is damaged "
                    f"({len(data)} bytes of {dtype})"
                )
            curves.setdefault(tid, {})[str(name)] = np.frombuffer(data, dtype).copy()
        trials = [_trial_from_row(r, curves.get(r[0], {}), where) for r in trial_rows]
        state, pending = None, None
        if blob and blob[0] is not None:
            try:
                stored = serial.load_tree(blob[0], template=strategy_template)
                if not isinstance(stored, dict) or "strategy" not in stored:
                    raise serial.SerialError("not a strategy record")
                state = stored["strategy"]
                ids, u = stored.get("pending") or (np.zeros(0, np.int64), None)
                pending = (np.asarray(ids, np.int64), u) if len(ids) else None
            except (serial.SerialError, TypeError, ValueError) as e:
                raise StorageError(
                    f"{where}: the stored strategy state is unreadable ({e}); the "
                    "trials are intact (`jaxhp show`, `export`)"
                ) from None
        model, model_value = None, -math.inf
        if model_row is not None:
            model_value = _real(model_row[0], f"{where}: the stored model's value")
            if with_model:
                try:
                    model = Model.from_record(model_row[1], trainable=trainable)
                except serial.SerialError as e:
                    raise StorageError(
                        f"{where}: the stored model (trial {model_row[2]}) is "
                        f"unreadable ({e})"
                    ) from None
        try:
            counts = [int(rnd[0]), int(rnd[1] or 0)]
            times = [float(rnd[2] or 0.0), float(rnd[3] or 0.0)]
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

    def store_model(self, model: Model, model_value: float) -> None:
        """Store ``model`` as the study's best (a recycled stream's, at its end)."""
        blob = model.to_record()
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?)",
                    (self.study_id, model.trial_id, model_value, blob),
                )
        except sqlite3.DatabaseError as e:
            raise StorageError(
                f"storage: could not store the best model in {self.path!r} ({e}); "
                "the trials are stored"
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


def _real(v: Any, what: str) -> float:
    if v is None:
        return math.nan
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise StorageError(f"{what} is not a number ({str(v)[:40]!r})")


def _flat_curves(curves: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in curves.items():
        v = np.asarray(v)
        if v.ndim == 2:  # [epochs, folds]
            for f in range(v.shape[1]):
                out[f"{k}_fold{f}"] = v[:, f]
        else:
            out[k] = v
    return out


def _series_dtype(series: np.ndarray) -> str:
    """How a curve is stored: float64 kept as float64, anything else as float32."""
    return "<f8" if np.asarray(series).dtype == np.float64 else "<f4"


def _as_curve(v: Any) -> np.ndarray:
    """A loaded series: a stored array as it was stored, a legacy list as float32."""
    return v if isinstance(v, np.ndarray) else np.asarray(v, np.float32)


def _unflat_curves(flat: dict[str, Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    folds: dict[str, dict[int, Any]] = {}
    for k, v in flat.items():
        base, sep, f = k.rpartition("_fold")
        if sep and f.isdigit():
            folds.setdefault(base, {})[int(f)] = v
        else:
            out[k] = _as_curve(v)
    for base, d in folds.items():
        out[base] = np.stack([_as_curve(d[f]) for f in sorted(d)], axis=1)
    return out


def _trial_from_row(row: tuple, flat: dict[str, Any], where: str) -> Trial:
    tid, rnd, status, value, epochs_run, best_epoch, wall, params, folds = row
    try:
        params = json.loads(params)
        folds = json.loads(folds)
        if not isinstance(params, dict) or not isinstance(folds, list):
            raise ValueError("params or fold values of the wrong type")
        if status not in STATUSES:
            raise ValueError(f"unknown status {str(status)[:40]!r}")
        ints = [int(tid), int(rnd), int(epochs_run), int(best_epoch)]
        if not all(isinstance(v, int) for v in (tid, rnd, epochs_run, best_epoch)):
            raise ValueError("a count is not an integer")
        return Trial(
            trial_id=ints[0],
            params=params,
            value=_real(value, "value"),
            status=status,
            epochs_run=ints[2],
            best_epoch=ints[3],
            wall_time=_real(wall, "wall_time"),
            round=ints[1],
            fold_values=tuple(_real(v, "fold value") for v in folds),
            curves=_unflat_curves(flat),
        )
    except (TypeError, ValueError, StorageError) as e:
        raise StorageError(
            f"{where}: trial {str(tid)[:20]} is unreadable ({e})"
        ) from None


def space_from_repr(text: str) -> Space | None:
    """The :class:`~jaxhp.Space` whose ``repr`` an old study stored (None if it is
    not one). The text is parsed, never evaluated: only ``Space(...)`` of ``Float``,
    ``Int``, ``Choice`` and ``Fixed`` calls with literal arguments is read."""
    import ast

    from jaxhp.space import Choice, Fixed, Float, Int

    kinds = {"Float": Float, "Int": Int, "Choice": Choice, "Fixed": Fixed}

    def call(node: ast.AST, allowed: dict) -> Any:
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in allowed
        ):
            raise ValueError("not a parameter")
        args = [ast.literal_eval(a) for a in node.args]
        kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        if len(kw) != len(node.keywords):
            raise ValueError("** in a stored space")
        return allowed[node.func.id](*args, **kw)

    try:
        tree = ast.parse(str(text), mode="eval").body
        if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)):
            return None
        if tree.func.id != "Space" or tree.args:
            return None
        params = {k.arg: call(k.value, kinds) for k in tree.keywords if k.arg}
        if len(params) != len(tree.keywords):
            return None
        return Space(params)
    except (ValueError, TypeError, SyntaxError, SpaceError, RecursionError):
        return None


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


# ------------------------------------------------------------------- migration
class _Key:
    """How old databases pickled a PRNG key (its data and implementation name); kept
    so that :func:`migrate` can read them."""

    def restore(self) -> Any:
        import jax

        return jax.random.wrap_key_data(self.data, impl=self.impl)


def migrate(old: str | os.PathLike, new: str | os.PathLike, *, trust: bool) -> list:
    """Convert a database of an older jaxhp (pickles, a ``repr`` space) into this
    format at ``new``. It unpickles the old file's strategy states and models, which
    runs any code planted in them: ``trust=True`` says the file is trusted.

    Returns the names of the studies converted."""
    import pickle

    import jax

    old, new = os.fspath(old), os.fspath(new)
    if not trust:
        raise StorageError(
            f"migrate: reading {old!r} unpickles its model and strategy state, which "
            "runs any code stored in them; pass --trust (trust=True) only for a "
            "file you trust"
        )
    if os.path.exists(new):
        raise StorageError(f"migrate: {new!r} exists; give a new file")
    src = _connect_readonly(old)
    try:
        version = src.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            raise StorageError(f"migrate: {old!r} is already in the current format")
        tables = {
            r[0]
            for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if "studies" not in tables:
            raise StorageError(f"migrate: {old!r} is not a jaxhp study database")
        studies = src.execute(
            "SELECT study_id, name, created, metric, direction, config FROM studies"
        ).fetchall()
        out = Study(new, "_")  # creates the file in the current format
        db = out._db
        done = []
        with out._transaction():
            for sid, name, created, metric, direction, config in studies:
                cfg = json.loads(config)
                space = space_from_repr(cfg.get("space", ""))
                cfg["space"] = None if space is None else space.to_data()
                new_sid = db.execute(
                    "INSERT INTO studies (name, created, metric, direction, config) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, created, metric, direction, json.dumps(cfg)),
                ).lastrowid
                rows = src.execute(
                    "SELECT trial_id, round, status, value, epochs_run, best_epoch, "
                    "wall_time, params, fold_values FROM trials WHERE study_id = ?",
                    (sid,),
                ).fetchall()
                db.executemany(
                    "INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(new_sid, *r) for r in rows],
                )
                series = src.execute(
                    "SELECT trial_id, name, dtype, data FROM series WHERE study_id = ?",
                    (sid,),
                ).fetchall()
                if "curves" in tables:
                    per: dict[tuple, list] = {}
                    for tid, cname, _, v in src.execute(
                        "SELECT trial_id, name, epoch, value FROM curves "
                        "WHERE study_id = ? ORDER BY trial_id, name, epoch",
                        (sid,),
                    ):
                        per.setdefault((tid, cname), []).append(_nan(v))
                    series += [
                        (tid, cname, "<f4", np.asarray(v, "<f4").tobytes())
                        for (tid, cname), v in per.items()
                    ]
                db.executemany(
                    "INSERT INTO series VALUES (?, ?, ?, ?, ?)",
                    [(new_sid, *r) for r in series],
                )
                rounds = src.execute(
                    "SELECT round, started, wall_time, compile_time, committed, "
                    "strategy_state FROM rounds WHERE study_id = ? ORDER BY round",
                    (sid,),
                ).fetchall()
                for r in rounds:
                    blob = None
                    if r[5] is not None:
                        state = jax.tree.map(
                            lambda x: x.restore() if isinstance(x, _Key) else x,
                            pickle.loads(r[5]),  # noqa: S301 - the caller trusts it
                            is_leaf=lambda x: isinstance(x, _Key),
                        )
                        blob = serial.dump_tree(
                            {
                                "strategy": state,
                                "pending": [np.zeros(0, np.int64), None],
                            }
                        )
                    db.execute(
                        "INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (new_sid, *r[:5], blob),
                    )
                m = src.execute(
                    "SELECT trial_id, value, blob FROM models WHERE study_id = ?",
                    (sid,),
                ).fetchone()
                if m is not None:
                    model = pickle.loads(m[2])  # noqa: S301 - the caller trusts it
                    db.execute(
                        "INSERT INTO models VALUES (?, ?, ?, ?)",
                        (new_sid, m[0], m[1], model.to_record()),
                    )
                done.append(name)
        out.close()
        return done
    finally:
        src.close()
