"""Tabular data for the command line: the data a config names, read as arrays.

:func:`load_table` reads a config's ``[data]``: a scikit-learn dataset, a CSV file
(:func:`read_csv`: a header row; text columns, and those named in
``data.categorical``, one-hot encoded, at most ``MAX_CATEGORIES`` distinct values
each) or an NPZ file (:func:`read_npz`: arrays read without pickle). ``jaxhp predict``
reads new rows with the same readers, encoding a CSV as the training one was. Every
error is a :class:`~jaxhp.config.ConfigError` naming the setting that gave the file.
"""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np

from jaxhp.config import ConfigError

__all__ = [
    "MAX_CATEGORIES",
    "check_file",
    "csv_header",
    "load_data",
    "load_table",
    "read_csv",
    "read_npz",
]

#: A text column with more distinct values than this is refused (an identifier or free
#: text, not a category: one-hot encoding it would add a column per row).
MAX_CATEGORIES = 256


def load_data(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The config's data as ``(X, y)``."""
    X, y, _ = load_table(cfg)
    return X, y


def load_table(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """The config's data as ``(X, y, features)``: ``features`` is how a CSV's columns
    became ``X`` (see :func:`read_csv`), None for other data."""
    data = cfg["data"]
    if "dataset" in data:
        import sklearn.datasets as ds

        X, y = getattr(ds, f"load_{data['dataset']}")(return_X_y=True)
        return X, y, None
    path = data["path"]
    check_file(path, "data.path")
    if path.lower().endswith(".npz"):
        target = data.get("target", "y")
        arrays, files = read_npz(path, "data.path", ("X", target))
        if target not in arrays or "X" not in arrays:
            raise ConfigError(
                f"data.target: {path!r} holds arrays {sorted(files)}; expected "
                f"'X' and {target!r}"
            )
        return arrays["X"], arrays[target], None
    X, y, features = read_csv(
        path, data.get("target"), data.get("categorical", []), cfg["task"]["kind"]
    )
    return X, y, features


def read_csv(
    path: str,
    target: str | None = None,
    categorical: list[str] = (),
    kind: str = "classifier",
    features: dict | None = None,
    key: str = "data.path",
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """A CSV file with a header row as ``(X, y, features)``.

    ``target`` is the target column (default: the last). A feature column of text, or
    one named in ``categorical``, is one-hot encoded. ``features`` says how the
    columns became ``X``: ``{"target": name, "columns": [[name, None] (a number),
    [name, [categories]] (one-hot), ...]}`` (JSON, stored with a command-line study).
    Given ``features`` (of the training data), the rows are encoded the same way, for
    prediction: the file must have those columns (in any order, others ignored); the
    target may be missing (``y`` is then None); an unseen category is an error.
    Errors start with ``key``, the setting that named the file.
    """
    where = f"{key}: {path!r}"
    rows = _csv_rows(path, key)
    header = _header(rows, where)
    if features is None:
        target = _check_target(header, path, target, categorical)
    else:
        target = features["target"]
        missing = [name for name, _ in features["columns"] if name not in header]
        if missing:
            raise ConfigError(
                f"{where} lacks the column(s) {', '.join(map(repr, missing))} that "
                f"the model was trained on (columns: {', '.join(header)})"
            )
    body = [r for r in rows[1:] if r]
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise ConfigError(
                f"{where} line {i + 2} has {len(r)} fields, expected {len(header)}"
            )
    columns = {name: [r[c].strip() for r in body] for c, name in enumerate(header)}
    X, features = _encode(where, columns, target, categorical, features, len(body))
    if target not in header:  # prediction rows without their target
        return X, None, features
    return X, _target_values(where, target, columns[target], kind), features


def _header(rows: list[list[str]], where: str) -> list[str]:
    """A CSV's column names, refusing a file without data rows or with two columns of
    one name."""
    if len(rows) < 2:
        raise ConfigError(f"{where} has no data rows under its header")
    header = [h.strip() for h in rows[0]]
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise ConfigError(
                f"{where} has two columns named {h!r} (line 1); rename one"
            )
        seen.add(h)
    return header


def _check_target(
    header: list[str], path: str, target: str | None, categorical: list[str]
) -> str:
    """The target column of training data (default: the last), checked with the
    columns named categorical."""
    target = header[-1] if target is None else target
    if target not in header:
        raise ConfigError(
            f"data.target: no column {target!r} in {path!r} "
            f"(columns: {', '.join(header)})"
        )
    for name in categorical:
        if name not in header or name == target:
            raise ConfigError(
                f"data.categorical: {name!r} is not a feature column of {path!r} "
                f"(features: {', '.join(h for h in header if h != target)})"
            )
    return target


def _encode(
    where: str,
    columns: dict[str, list[str]],
    target: str,
    categorical: list[str],
    features: dict | None,
    n_rows: int,
) -> tuple[np.ndarray, dict]:
    """The feature columns as ``X [N, features]`` and how they were encoded: as
    ``features`` says, or (None: training data) numbers kept, text one-hot."""
    if features is None:
        names = [h for h in columns if h != target]
        encoded = [
            _csv_feature(
                where, n, columns[n], "categorical" if n in categorical else "auto"
            )
            for n in names
        ]
        features = {
            "target": target,
            "columns": [[n, c] for n, (_, c) in zip(names, encoded, strict=True)],
        }
    else:
        encoded = [
            _csv_feature(where, n, columns[n], "numeric" if cats is None else cats)
            for n, cats in features["columns"]
        ]
    cols = [x for x, _ in encoded]
    X = np.concatenate(cols, axis=1) if cols else np.empty((n_rows, 0))
    return X, features


def _target_values(where: str, target: str, y_raw: list[str], kind: str) -> np.ndarray:
    """The target column: numbers (integers for a classifier's whole numbers), or
    a classifier's text labels."""
    if "" in y_raw:
        raise ConfigError(
            f"{where} line {y_raw.index('') + 2}, column {target!r} (the "
            "target): empty (fill in or drop rows with missing values)"
        )
    try:
        y = np.asarray([float(v) for v in y_raw])
        if kind == "classifier" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
    except ValueError:
        if kind == "regressor":
            raise ConfigError(
                f"data.target: column {target!r} must be numeric for a regressor"
            ) from None
        y = np.asarray(y_raw)
    return y


def check_file(path: str, key: str) -> None:
    """Raise :class:`ConfigError` (naming ``key``) unless ``path`` is a readable file."""
    if not os.path.exists(path):
        raise ConfigError(f"{key}: file {path!r} not found")
    if os.path.isdir(path):
        raise ConfigError(f"{key}: {path!r} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{key}: {path!r} cannot be read (permissions)")


def read_npz(
    path: str, key: str, names: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays ``names`` (those present) of an ``.npz`` file and the names of all
    its arrays, read without pickle: an object array, or a file that is not an
    ``.npz``, is a :class:`ConfigError`."""
    import zipfile

    check_file(path, key)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ConfigError(f"{key}: {path!r} is a .npy array, not an .npz file")
            out = {}
            for name in names:
                if name in z.files:
                    try:
                        out[name] = z[name]
                    except ValueError as e:
                        raise ConfigError(
                            f"{key}: {path!r} array {name!r} cannot be read without "
                            f"pickle ({e}); save it as numbers or strings"
                        ) from None
            return out, list(z.files)
    except ConfigError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError(
            f"{key}: {path!r} is not a readable .npz file ({e})"
        ) from None


def _csv_rows(path: str, key: str) -> list[list[str]]:
    where = f"{key}: {path!r}"
    check_file(path, key)
    try:
        # utf-8-sig: a byte-order mark (as spreadsheets write) is not part of a name.
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.reader(f))
    except UnicodeDecodeError as e:
        line = _line_of(path, e.start)
        raise ConfigError(
            f"{where} line {line} is not UTF-8 text (byte {e.object[e.start]:#04x}); "
            "save the file as UTF-8"
        ) from None
    except csv.Error as e:
        raise ConfigError(f"{where} is not a readable CSV file ({e})") from None
    except OSError as e:
        raise ConfigError(f"{where} cannot be read ({e.strerror})") from None


def csv_header(path: str, key: str) -> list[str]:
    """The column names of a CSV file's header row."""
    rows = _csv_rows(path, key)
    return [h.strip() for h in rows[0]] if rows else []


def _line_of(path: str, offset: int) -> int:
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n") + 1


def _csv_feature(where: str, name: str, values: list[str], how: Any):
    """One CSV column as ``(columns [N, k], categories)``. ``how``: ``"auto"`` (numbers
    stay a column, categories None; a column of text is one-hot encoded, its
    categories sorted), ``"categorical"`` (one-hot, whatever the values), ``"numeric"``
    or a list of categories (as a trained model's column was: for prediction)."""
    for i, v in enumerate(values):
        if not v:
            raise ConfigError(
                f"{where} line {i + 2}, column {name!r}: empty (fill in or drop rows "
                "with missing values)"
            )
    if how in ("auto", "numeric"):
        numbers = []
        for v in values:
            try:
                numbers.append(float(v))
            except ValueError:
                numbers.append(None)
        text = [i for i, x in enumerate(numbers) if x is None]
        if not text:
            return np.asarray(numbers, np.float64)[:, None], None
        i = text[0]
        if how == "numeric":
            raise ConfigError(
                f"{where} line {i + 2}, column {name!r}: {values[i]!r} is not a number "
                "(the model was trained on numbers there)"
            )
        if len(text) < len(values):
            raise ConfigError(
                f"{where} line {i + 2}, column {name!r}: {values[i]!r} is not a number, "
                f"though {len(values) - len(text)} of the column's values are: fix it, "
                "or name the column in data.categorical to one-hot encode it"
            )
    if isinstance(how, list):
        categories = how
    else:
        categories = sorted(set(values))
        if len(categories) > MAX_CATEGORIES:
            raise ConfigError(
                f"{where} column {name!r}: {len(categories)} distinct values, more than "
                f"{MAX_CATEGORIES} categories: an identifier or free text? Drop it"
            )
    index = {c: k for k, c in enumerate(categories)}
    for i, v in enumerate(values):
        if v not in index:
            raise ConfigError(
                f"{where} line {i + 2}, column {name!r}: {v!r} is not a category the "
                f"model was trained on ({', '.join(map(repr, categories[:10]))}"
                f"{', ...' if len(categories) > 10 else ''})"
            )
    codes = np.asarray([index[v] for v in values], np.int64)
    return np.eye(len(categories), dtype=np.float64)[codes], categories
