"""Conversion of a study database of an older jaxhp (pickles, a ``repr`` space) into
the current format (:mod:`jaxhp.study_format`): ``jaxhp migrate OLD NEW --trust``.

Old databases stored the strategy state and the best model as pickles, and the space
as its ``repr``. :func:`migrate` unpickles them (so only for a file you trust) and
writes them as data; :func:`space_from_repr` parses an old space without evaluating
it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

import numpy as np

from jaxhp import serial
from jaxhp.space import Space, SpaceError
from jaxhp.storage import Study
from jaxhp.study_format import (
    SCHEMA_VERSION,
    StorageError,
    _connect_readonly,
    _nan,
)

__all__ = ["migrate", "space_from_repr"]


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


class _Key:
    """How old databases pickled a PRNG key (its data and implementation name); kept
    so that :func:`migrate` can read them. Pickles name it ``jaxhp.storage._Key``,
    which :mod:`jaxhp.storage` re-exports."""

    def restore(self) -> Any:
        import jax

        return jax.random.wrap_key_data(self.data, impl=self.impl)


def migrate(old: str | os.PathLike, new: str | os.PathLike, *, trust: bool) -> list:
    """Convert a database of an older jaxhp (pickles, a ``repr`` space) into this
    format at ``new``. It unpickles the old file's strategy states and models, which
    runs any code planted in them: ``trust=True`` says the file is trusted.

    Returns the names of the studies converted."""
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
        tables = _old_tables(src, old)
        studies = src.execute(
            "SELECT study_id, name, created, metric, direction, config FROM studies"
        ).fetchall()
        out = Study(new, "_")  # creates the file in the current format
        done = []
        with out._transaction():
            for study in studies:
                _copy_study(src, out._db, tables, study)
                done.append(study[1])
        out.close()
        return done
    finally:
        src.close()


def _old_tables(src: sqlite3.Connection, old: str) -> set[str]:
    """The tables of an old database; refuses one in the current format or another
    program's."""
    version = src.execute("PRAGMA user_version").fetchone()[0]
    if version >= SCHEMA_VERSION:
        raise StorageError(f"migrate: {old!r} is already in the current format")
    tables = {
        r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    if "studies" not in tables:
        raise StorageError(f"migrate: {old!r} is not a jaxhp study database")
    return tables


def _copy_study(
    src: sqlite3.Connection, db: sqlite3.Connection, tables: set[str], study: tuple
) -> None:
    """One old study, its trials, series, rounds and model, written into ``db``."""
    sid, name, created, metric, direction, config = study
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
    db.executemany(
        "INSERT INTO series VALUES (?, ?, ?, ?, ?)",
        [(new_sid, *r) for r in _old_series(src, tables, sid)],
    )
    _copy_rounds(src, db, sid, new_sid)
    m = src.execute(
        "SELECT trial_id, value, blob FROM models WHERE study_id = ?",
        (sid,),
    ).fetchone()
    if m is not None:
        import pickle

        model = pickle.loads(m[2])  # noqa: S301 - the caller trusts it
        db.execute(
            "INSERT INTO models VALUES (?, ?, ?, ?)",
            (new_sid, m[0], m[1], model.to_record()),
        )


def _old_series(src: sqlite3.Connection, tables: set[str], sid: int) -> list[tuple]:
    """A study's ``(trial_id, name, dtype, data)`` series rows: those of the
    ``series`` table, and those of an older ``curves`` table (a row per epoch)."""
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
    return series


def _copy_rounds(
    src: sqlite3.Connection, db: sqlite3.Connection, sid: int, new_sid: int
) -> None:
    """A study's rounds, a pickled strategy state rewritten as an ``.npz`` tree."""
    import pickle

    import jax

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
                {"strategy": state, "pending": [np.zeros(0, np.int64), None]}
            )
        db.execute(
            "INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?)",
            (new_sid, *r[:5], blob),
        )
