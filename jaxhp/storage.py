"""SQLite persistence of a study (standard-library ``sqlite3``, WAL mode) and resume.

A study is stored as it runs: after every round, in one transaction, its trials (with
hyperparameters, status, timing and per-epoch curves), the strategy's state after it was
told the round, and the best trial's trained model when it improved (on accelerators
``tune`` commits a round on a writer thread while the next one trains). A process killed at any moment
leaves the database at the end of its last committed round; resuming re-runs
the interrupted round from the stored strategy state, and since a trial's result depends
only on ``(seed, trial_id, hyperparameters)``, the resumed study ends with exactly the
trials and results of an uninterrupted one.

Tables (one database can hold several studies, by name):

- ``studies(study_id, name, created, metric, direction, config)``: ``config`` is JSON
  (space, strategy, seed, ... and, for studies started from the command line, the whole
  config file, so that ``jaxhp resume`` can rebuild the task).
- ``rounds(study_id, round, started, wall_time, compile_time, committed, strategy_state)``.
- ``trials(study_id, trial_id, round, status, value, epochs_run, best_epoch, wall_time,
  params, fold_values)``: ``params`` and ``fold_values`` are JSON.
- ``series(study_id, trial_id, name, dtype, data)``: one row per trial and per-epoch
  series (``train_loss``, ``value`` (the metric), ``value_fold<k>``, other metrics);
  ``data`` holds the series as raw little-endian numbers of ``dtype`` (``"<f4"`` for
  the engine's float32 curves, ``"<f8"`` for float64 ones): ``np.frombuffer(data,
  dtype)``, NaN where a trial was not validated. One row per series, not per epoch: a
  round of 4,096 trials stores 4,096 x 4 rows rather than x 40 (10 epochs), and no
  value passes through Python one by one (``benchmarks/RESULTS.md``). Databases
  written before kept a row per epoch in ``curves(study_id, trial_id, epoch, name,
  value)``; they are still read, and resuming one writes its new rounds to ``series``.
- ``models(study_id, trial_id, value, blob)``: the best trial's weights.

The strategy state and the model are Python pickles (of NumPy arrays and jaxhp's own
classes): open only databases you trust, as with ``torch.load``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sqlite3
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from jaxhp.results import Model, Results, Trial
from jaxhp.space import Choice, Fixed, Float, Int, Space

__all__ = ["Study", "StoredRound", "StorageError", "load"]

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
"""


class StorageError(RuntimeError):
    """A storage path or study that cannot be used as asked."""


class StudyMismatchError(StorageError, ValueError):
    """A stored study resumed with other settings (data, space, strategy, ...): the
    caller's arguments conflict with the storage, hence a ``ValueError`` too."""


class _Key:
    """A pickled PRNG key array: its raw data and implementation name."""

    def __init__(self, key: jax.Array):
        self.data = np.asarray(jax.random.key_data(key))
        self.impl = str(jax.random.key_impl(key))

    def restore(self) -> jax.Array:
        return jax.random.wrap_key_data(self.data, impl=self.impl)


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def dump_state(state: Any) -> bytes:
    """Pickle a strategy state pytree (device arrays become NumPy, keys their data)."""
    host = jax.tree.map(
        lambda x: (
            _Key(x) if _is_key(x) else np.asarray(x) if isinstance(x, jax.Array) else x
        ),
        state,
    )
    return pickle.dumps(host, protocol=pickle.HIGHEST_PROTOCOL)


def load_state(blob: bytes) -> Any:
    host = pickle.loads(blob)
    return jax.tree.map(
        lambda x: x.restore() if isinstance(x, _Key) else x,
        host,
        is_leaf=lambda x: isinstance(x, _Key),
    )


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


@dataclass
class StoredRound:
    """What a study holds after its last committed round."""

    trials: list[Trial]
    rounds: int  # rounds committed
    started: int  # trials started (and finished) so far
    wall_time: float
    compile_time: float
    strategy_state: Any  # None when no round was committed
    model: Model | None
    model_value: float  # oriented (higher is better), -inf without a model


class Study:
    """One named study in a SQLite database (created on first use)."""

    def __init__(self, path: str | os.PathLike, name: str = "default"):
        self.path = os.fspath(path)
        self.name = name
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise StorageError(f"storage: directory {parent!r} does not exist")
        try:
            # Rounds may be committed from tune()'s writer thread (one at a time,
            # never while this thread uses the connection).
            self._db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise StorageError(
                f"storage: {self.path!r} is not a usable SQLite database ({e})"
            ) from None
        row = self._db.execute(
            "SELECT study_id, metric, direction, config FROM studies WHERE name = ?",
            (name,),
        ).fetchone()
        self.study_id: int | None = row[0] if row else None
        self.metric = row[1] if row else None
        self.direction = row[2] if row else None
        self.config: dict[str, Any] | None = json.loads(row[3]) if row else None

    # ---------------------------------------------------------------- reading
    @staticmethod
    def names(path: str | os.PathLike) -> list[str]:
        """Names of the studies stored at ``path``."""
        if not os.path.exists(path):
            raise StorageError(f"storage: no database at {os.fspath(path)!r}")
        db = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True)
        try:
            return [r[0] for r in db.execute("SELECT name FROM studies ORDER BY 1")]
        except sqlite3.DatabaseError as e:
            raise StorageError(f"storage: {os.fspath(path)!r}: {e}") from None
        finally:
            db.close()

    @property
    def exists(self) -> bool:
        return self.study_id is not None

    def create(self, *, metric: str, direction: str, config: dict[str, Any]) -> None:
        with self._transaction():
            cur = self._db.execute(
                "INSERT INTO studies (name, created, metric, direction, config) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.name, time.time(), metric, direction, json.dumps(config)),
            )
        self.study_id = cur.lastrowid
        self.metric, self.direction, self.config = metric, direction, config

    def load(self) -> StoredRound:
        """Every committed trial, the last strategy state and the best model."""
        if not self.exists:
            raise StorageError(f"storage: no study {self.name!r} in {self.path!r}")
        sid = self.study_id
        with self._transaction():  # one consistent snapshot
            rnd = self._db.execute(
                "SELECT COUNT(*), MAX(started), SUM(wall_time), SUM(compile_time) "
                "FROM rounds WHERE study_id = ?",
                (sid,),
            ).fetchone()
            blob = self._db.execute(
                "SELECT strategy_state FROM rounds WHERE study_id = ? "
                "ORDER BY round DESC LIMIT 1",
                (sid,),
            ).fetchone()
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
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'curves'"
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
                "SELECT value, blob FROM models WHERE study_id = ?", (sid,)
            ).fetchone()
        curves: dict[int, dict[str, Any]] = {}
        for tid, name, _, value in legacy_rows:
            curves.setdefault(tid, {}).setdefault(name, []).append(_nan(value))
        for tid, name, dtype, data in series_rows:
            curves.setdefault(tid, {})[name] = np.frombuffer(data, dtype).copy()
        trials = [_trial_from_row(r, curves.get(r[0], {})) for r in trial_rows]
        return StoredRound(
            trials=trials,
            rounds=int(rnd[0]),
            started=int(rnd[1] or 0),
            wall_time=float(rnd[2] or 0.0),
            compile_time=float(rnd[3] or 0.0),
            strategy_state=load_state(blob[0]) if blob and blob[0] else None,
            model=pickle.loads(model_row[1]) if model_row else None,
            model_value=float(model_row[0]) if model_row else -math.inf,
        )

    # ---------------------------------------------------------------- writing
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
    ) -> None:
        """Store one finished round atomically: all of it, or (if killed) none of it."""
        sid = self.study_id
        state_blob = dump_state(strategy_state)
        model_blob = None
        if model is not None:
            try:
                model_blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as e:  # noqa: BLE001 - e.g. a Trainable holding a lambda
                warnings.warn(
                    f"storage: the best model cannot be stored ({e}); the trials are",
                    stacklevel=2,
                )
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
        with self._transaction():
            self._db.executemany(
                "INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", trial_rows
            )
            self._db.executemany(
                "INSERT INTO series VALUES (?, ?, ?, ?, ?)", series_rows
            )
            # Only the newest strategy state is needed to resume.
            self._db.execute(
                "UPDATE rounds SET strategy_state = NULL WHERE study_id = ?", (sid,)
            )
            self._db.execute(
                "INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sid, rnd, started, wall_time, compile_time, time.time(), state_blob),
            )
            if model_blob is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?)",
                    (sid, model.trial_id, model_value, model_blob),
                )

    def close(self) -> None:
        self._db.close()

    def _transaction(self):
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


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


def _trial_from_row(row: tuple, flat: dict[str, Any]) -> Trial:
    tid, rnd, status, value, epochs_run, best_epoch, wall, params, folds = row
    return Trial(
        trial_id=int(tid),
        params=json.loads(params),
        value=_nan(value),
        status=status,
        epochs_run=int(epochs_run),
        best_epoch=int(best_epoch),
        wall_time=float(wall),
        round=int(rnd),
        fold_values=tuple(_nan(v) for v in json.loads(folds)),
        curves=_unflat_curves(flat),
    )


def space_from_repr(text: str) -> Space | None:
    """The :class:`~jaxhp.Space` whose ``repr`` a study stored (None if unreadable)."""
    names = {
        "Space": Space,
        "Float": Float,
        "Int": Int,
        "Choice": Choice,
        "Fixed": Fixed,
    }
    try:
        space = eval(text, {"__builtins__": {}}, names)  # noqa: S307 - jaxhp's own repr
    except Exception:  # noqa: BLE001 - an older or foreign study: plots fall back
        return None
    return space if isinstance(space, Space) else None


def load(path: str | os.PathLike, study: str | None = None) -> Results:
    """The results of a stored study: trials, best trial and its model.

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
    s = Study(path, study)
    if not s.exists:
        raise StorageError(
            f"storage: no study {study!r} in {os.fspath(path)!r} (it holds {names})"
        )
    try:
        stored = s.load()
    finally:
        s.close()
    return Results(
        stored.trials,
        metric=s.metric,
        direction=s.direction,
        model=stored.model,
        space=space_from_repr((s.config or {}).get("space", "")),
        stats={
            "wall_time": stored.wall_time,
            "compile_time": stored.compile_time,
            "rounds": stored.rounds,
            "strategy": (s.config or {}).get("strategy"),
            "storage": os.fspath(path),
            "study": study,
        },
    )
