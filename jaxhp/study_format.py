"""The stored format of a study: its SQLite tables, their version, and the pure
conversions between rows and :class:`~jaxhp.results.Trial` records.

Everything here is data: nothing is unpickled or evaluated. JSON and typed columns
hold everything but arrays, and arrays are ``.npz`` files read with
``np.load(allow_pickle=False)`` (see :mod:`jaxhp.serial`). :mod:`jaxhp.storage` reads
and writes studies in this format; :mod:`jaxhp.migrate` converts older ones into it.

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
import sqlite3
import urllib.request
from typing import Any

import numpy as np

from jaxhp.results import STATUSES, Trial

__all__ = ["SCHEMA", "SCHEMA_VERSION", "StorageError"]

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


_SERIES_DTYPES = ("<f4", "<f8")


class StorageError(RuntimeError):
    """A storage path or study that cannot be used as asked."""


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


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


def _curves_from_rows(
    legacy_rows: list[tuple], series_rows: list[tuple], where: str
) -> dict[int, dict[str, Any]]:
    """Each trial's stored series by name, ``{trial_id: {name: values}}``: from the
    ``series`` table, and from a ``curves`` table (one row per epoch) of an older
    format."""
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
    return curves
