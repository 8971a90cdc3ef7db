"""Sweep configs (TOML) for the command line: parse, validate, override, write back.

A config names the data, the task, the validation, the search space, the strategy, the
stopper and the study database::

    [data]
    dataset = "digits"        # digits | breast_cancer | wine | iris | diabetes
    # path = "data.csv"       # or a CSV file (header row) / an NPZ file (arrays X, y)
    # target = "label"        # the target column (CSV) or array (NPZ); default: last / "y"
    # categorical = ["zip"]   # CSV columns to one-hot encode even though they are numbers
    #                         # (a column of text is one-hot encoded anyway)

    [task]
    kind = "classifier"       # or "regressor" (default: regressor for diabetes)
    val_fraction = 0.2        # or folds = 5

    [search]
    strategy = "bayes"        # grid | random | sobol | bayes
    n_trials = 64
    population = 32
    seed = 0
    # timeout = "2h"          # start no round after this ("90s", "30m", "1h30m", or
    #                         # seconds); `jaxhp resume` continues

    [early_stopping]          # optional; kind = "patience" (default), "median",
    patience = 4              # "percentile", "threshold", "asha", "hyperband"

    [study]
    storage = "digits.db"
    name = "default"

    [space]
    learning_rate = { float = [1e-4, 3e-2], log = true }
    n_layers = { int = [1, 3] }
    width = { int = [16, 128], log = true }
    batch_size = [32, 64, 128]       # a list is a choice
    optimizer = ["adam", "sgd"]
    epochs = 20                      # a plain value is fixed

    [run]                     # optional engine settings
    segment_epochs = 10       # epochs per compiled call (progress is reported between)
    bucketing = "auto"        # auto | pow2 | none
    eval_every = 1            # validate every this many epochs (1 with early stopping)

Every error names the offending key (``search.population: expected a positive integer,
got 0``) and is raised before any data is loaded or anything compiles.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import re
import sys
from typing import Any

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from jaxhp.space import Choice, Fixed, Float, Int, Space, SpaceError

__all__ = [
    "ConfigError",
    "DATASETS",
    "build",
    "dumps",
    "load_config",
    "read_config",
    "parse",
    "set_option",
]

DATASETS = ("digits", "breast_cancer", "wine", "iris", "diabetes")
# [early_stopping] kind -> (jaxhp.stopping name, its keys)
STOPPERS = {
    "patience": ("Patience", ("patience", "min_delta")),
    "median": ("Median", ("warmup", "min_trials")),
    "percentile": ("Percentile", ("percentile", "warmup", "min_trials")),
    "threshold": ("Threshold", ("lower", "upper", "warmup")),
    "asha": ("SuccessiveHalving", ("min_resource", "eta", "max_resource")),
    "successive_halving": (
        "SuccessiveHalving",
        ("min_resource", "eta", "max_resource"),
    ),
    "hyperband": ("Hyperband", ("min_resource", "max_resource", "eta")),
}
SECTIONS = {
    "data": {"dataset", "path", "target", "categorical"},
    "task": {"kind", "val_fraction", "folds", "compute_dtype"},
    "search": {
        "strategy",
        "n_trials",
        "population",
        "seed",
        "options",
        "timeout",
        "enqueue",
    },
    "early_stopping": {"kind"} | {k for _, keys in STOPPERS.values() for k in keys},
    "study": {"storage", "name"},
    "space": None,  # any parameter name (checked against the task later)
    "run": {"segment_epochs", "bucketing", "eval_every"},
}
DEFAULTS = {
    "search": {"strategy": "random", "n_trials": 64, "population": 64, "seed": 0},
    "study": {"name": "default"},
}


class ConfigError(ValueError):
    """A config key with a value jaxhp cannot use; the message names the key."""


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML config file, unvalidated (``parse`` validates it)."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)!r} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{os.fspath(path)}: not valid TOML ({e})") from None


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a TOML config file."""
    return parse(read_config(path))


def parse(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate a config dict and fill in defaults; returns a new dict."""
    cfg = copy.deepcopy(raw)
    for section, value in cfg.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{section}: unknown section (expected one of {', '.join(SECTIONS)})"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{section}: expected a table [{section}]")
        allowed = SECTIONS[section]
        for key in value:
            if allowed is not None and key not in allowed:
                raise ConfigError(
                    f"{section}.{key}: unknown key (expected one of "
                    f"{', '.join(sorted(allowed))})"
                )
    cfg.setdefault("task", {})
    for section, defaults in DEFAULTS.items():
        cfg.setdefault(section, {})
        for k, v in defaults.items():
            cfg[section].setdefault(k, v)

    data = cfg.get("data")
    if not data or ("dataset" in data) == ("path" in data):
        raise ConfigError("data: give exactly one of data.dataset or data.path")
    if "dataset" in data and data["dataset"] not in DATASETS:
        raise ConfigError(
            f"data.dataset: expected one of {', '.join(DATASETS)}, got {data['dataset']!r}"
        )
    if "path" in data:
        _expect(data["path"], str, "data.path", "a file path")
        if not data["path"].lower().endswith((".csv", ".npz")):
            raise ConfigError(
                f"data.path: expected a .csv or .npz file, got {data['path']!r}"
            )
    if "target" in data:
        _expect(data["target"], str, "data.target", "a column or array name")
    if "categorical" in data:
        cats = data["categorical"]
        if "path" not in data or not data["path"].lower().endswith(".csv"):
            raise ConfigError("data.categorical: only for a CSV file (data.path)")
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            raise ConfigError(
                f"data.categorical: expected a list of column names, got {cats!r}"
            )

    task = cfg["task"]
    kind = task.setdefault(
        "kind", "regressor" if data.get("dataset") == "diabetes" else "classifier"
    )
    if kind not in ("classifier", "regressor"):
        raise ConfigError(
            f"task.kind: expected 'classifier' or 'regressor', got {kind!r}"
        )
    if "folds" in task:
        if "val_fraction" in task:
            raise ConfigError("task: give task.val_fraction or task.folds, not both")
        _positive_int(task["folds"], "task.folds", minimum=2)
    else:
        task.setdefault("val_fraction", 0.2)
        v = task["val_fraction"]
        if not (_is_real(v) and 0 < v < 1):
            raise ConfigError(
                f"task.val_fraction: expected a number between 0 and 1, got {v!r}"
            )

    from jaxhp.tasks.mlp import COMPUTE_DTYPES

    for key, allowed in (("compute_dtype", COMPUTE_DTYPES),):
        if key in task and task[key] not in allowed:
            raise ConfigError(
                f"task.{key}: expected one of {', '.join(allowed)}, got {task[key]!r}"
            )

    search = cfg["search"]
    from jaxhp.strategies import STRATEGIES

    if search["strategy"] not in STRATEGIES:
        raise ConfigError(
            f"search.strategy: expected one of {', '.join(STRATEGIES)}, got "
            f"{search['strategy']!r}"
        )
    _positive_int(search["n_trials"], "search.n_trials")
    _positive_int(search["population"], "search.population")
    if (
        not isinstance(search["seed"], int)
        or isinstance(search["seed"], bool)
        or not -(2**63) <= search["seed"] < 2**63
    ):
        raise ConfigError(
            f"search.seed: expected an integer in [-2**63, 2**63), got "
            f"{search['seed']!r}"
        )
    if "options" in search:
        _expect(search["options"], dict, "search.options", "a table")
    if "timeout" in search:
        seconds(search["timeout"], "search.timeout")  # validates
    if "enqueue" in search:
        _expect(search["enqueue"], list, "search.enqueue", "a list of tables")
        for i, c in enumerate(search["enqueue"]):
            _expect(c, dict, f"search.enqueue[{i}]", "a table of hyperparameters")

    if "early_stopping" in cfg:
        stopper_of(cfg)  # validates

    study = cfg["study"]
    if "storage" not in study:
        raise ConfigError("study.storage: missing (the path of the study's database)")
    _expect(study["storage"], str, "study.storage", "a file path")
    _expect(study["name"], str, "study.name", "a string")

    run = cfg.get("run", {})
    if "segment_epochs" in run:
        _positive_int(run["segment_epochs"], "run.segment_epochs")
    if "eval_every" in run:
        _positive_int(run["eval_every"], "run.eval_every")
        if run["eval_every"] > 1 and "early_stopping" in cfg:
            raise ConfigError(
                "run.eval_every: early stopping reads the validation metric every "
                "epoch; drop [early_stopping] or set run.eval_every = 1"
            )
    if "bucketing" in run and run["bucketing"] not in ("auto", "pow2", "none"):
        raise ConfigError(
            f"run.bucketing: expected 'auto', 'pow2' or 'none', got {run['bucketing']!r}"
        )

    if not cfg.get("space"):
        raise ConfigError(
            "space: missing or empty (a [space] table of hyperparameters)"
        )
    space_of(cfg)  # every parameter well-formed
    return cfg


def stopper_of(cfg: dict[str, Any]) -> Any:
    """The stopper an ``[early_stopping]`` table describes (None without one)."""
    from jaxhp import stopping

    es = cfg.get("early_stopping")
    if not es:
        return None
    kind = es.get("kind", "patience")
    if kind not in STOPPERS:
        raise ConfigError(
            f"early_stopping.kind: expected one of {', '.join(STOPPERS)}, got {kind!r}"
        )
    name, keys = STOPPERS[kind]
    for k in es:
        if k != "kind" and k not in keys:
            raise ConfigError(
                f"early_stopping.{k}: not a setting of kind {kind!r} "
                f"(expected {', '.join(keys)})"
            )
    if kind == "patience":
        if "patience" not in es:
            raise ConfigError("early_stopping.patience: missing (an integer >= 1)")
        _positive_int(es["patience"], "early_stopping.patience")
    for k in keys:
        if k in es and not _is_real(es[k]):
            raise ConfigError(f"early_stopping.{k}: expected a number, got {es[k]!r}")
    args = {k: es[k] for k in keys if k in es}
    if "min_delta" in args:
        args["min_delta"] = float(args["min_delta"])
    try:
        return getattr(stopping, name)(**args)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"early_stopping: {e}") from None


def space_of(cfg: dict[str, Any]) -> Space:
    params = {}
    for name, spec in cfg["space"].items():
        params[name] = _param(name, spec)
    try:
        return Space(params)
    except SpaceError as e:
        raise ConfigError(f"space.{e}") from None


def _param(name: str, spec: Any):
    key = f"space.{name}"
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{key}: an empty list (a choice needs values)")
        return Choice(spec)
    if not isinstance(spec, dict):
        return Fixed(spec)
    kinds = [k for k in ("float", "int", "choice", "fixed") if k in spec]
    if len(kinds) != 1:
        raise ConfigError(
            f"{key}: expected exactly one of float = [low, high], int = [low, high], "
            f"choice = [...], fixed = value; got keys {sorted(spec)}"
        )
    kind = kinds[0]
    extra = set(spec) - {kind, "log", "when"}
    if extra or ("log" in spec and kind not in ("float", "int")):
        raise ConfigError(f"{key}: unexpected key(s) {sorted(extra or {'log'})}")
    if "when" in spec and kind == "fixed":
        raise ConfigError(f"{key}: a fixed value takes no when (it is never searched)")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{key}.log: expected true or false, got {log!r}")
    when = spec.get("when")
    if when is not None and not (isinstance(when, dict) and when):
        raise ConfigError(
            f"{key}.when: expected a table of parameters and values, e.g. "
            f'when = {{ optimizer = "sgd" }}, got {when!r}'
        )
    v = spec[kind]
    if kind == "fixed":
        return Fixed(v)
    if kind == "choice":
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{key}.choice: expected a non-empty list, got {v!r}")
        return Choice(v, when=when)
    if not (isinstance(v, list) and len(v) == 2):
        raise ConfigError(f"{key}.{kind}: expected [low, high], got {v!r}")
    if kind == "int" and not all(
        isinstance(b, int) and not isinstance(b, bool) for b in v
    ):
        raise ConfigError(f"{key}.int: bounds must be integers, got {v!r}")
    if not all(_is_real(b) for b in v):
        raise ConfigError(f"{key}.{kind}: bounds must be numbers, got {v!r}")
    return (Float if kind == "float" else Int)(v[0], v[1], log=log, when=when)


def set_option(cfg: dict[str, Any], assignment: str) -> None:
    """Apply ``section.key=VALUE`` (VALUE in TOML syntax; a bare word is a string)."""
    path, sep, text = assignment.partition("=")
    parts = path.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(
            f"--set {assignment!r}: expected SECTION.KEY=VALUE, e.g. search.n_trials=128"
        )
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {p} is not a table")
    node[parts[-1]] = value


# ---------------------------------------------------------------------------- writing
def dumps(cfg: dict[str, Any]) -> str:
    """TOML text for a config (``parse(tomllib.loads(dumps(c))) == c``)."""
    lines = []
    for section, table in cfg.items():
        lines.append(f"[{section}]")
        for k, v in table.items():
            lines.append(f"{_key(k)} = {_value(v)}")
        lines.append("")
    return "\n".join(lines)


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _value(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise ConfigError(f"cannot write {v!r} as TOML")


# ---------------------------------------------------------------------------- building
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
    if features is None:
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

    def column(name):
        c = header.index(name)
        return [r[c].strip() for r in body]

    if features is None:
        names = [h for h in header if h != target]
        encoded = [
            _csv_feature(
                where, n, column(n), "categorical" if n in categorical else "auto"
            )
            for n in names
        ]
        features = {
            "target": target,
            "columns": [[n, c] for n, (_, c) in zip(names, encoded, strict=True)],
        }
    else:
        encoded = [
            _csv_feature(where, n, column(n), "numeric" if cats is None else cats)
            for n, cats in features["columns"]
        ]
    cols = [x for x, _ in encoded]
    X = np.concatenate(cols, axis=1) if cols else np.empty((len(body), 0))
    if target not in header:  # prediction rows without their target
        return X, None, features
    y_raw = column(target)
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
    return X, y, features


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


def resolve_paths(cfg: dict[str, Any], base: str) -> None:
    """Make a relative ``data.path`` absolute against ``base`` (the config file's
    folder), so that the study's stored config works from any folder."""
    data = cfg.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        path = os.path.expanduser(data["path"])
        if not os.path.isabs(path):
            data["path"] = os.path.normpath(os.path.join(base, path))


def _line_of(path: str, offset: int) -> int:
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n") + 1


#: A text column with more distinct values than this is refused (an identifier or free
#: text, not a category: one-hot encoding it would add a column per row).
MAX_CATEGORIES = 256


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


def build(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`jaxhp.tune` that a parsed config describes."""
    import jaxhp

    X, y, features = load_table(cfg)
    t = cfg["task"]
    cls = (
        jaxhp.tasks.MLPClassifier
        if t["kind"] == "classifier"
        else jaxhp.tasks.MLPRegressor
    )
    split = (
        {"folds": t["folds"]} if "folds" in t else {"val_fraction": t["val_fraction"]}
    )
    kernels = {k: t[k] for k in ("compute_dtype",) if k in t}
    task = cls(X, y, seed=cfg["search"]["seed"], **split, **kernels)
    space = space_of(cfg)
    try:
        task.check_space(space)
    except SpaceError as e:
        raise ConfigError(f"space.{e}") from None
    s = cfg["search"]
    from jaxhp.strategies import make_strategy, resolve_n_trials

    try:  # the strategy's own checks of its options, before anything runs
        strategy = make_strategy(s["strategy"], space, **(s.get("options") or {}))
    except SpaceError as e:  # what the strategy cannot search
        raise ConfigError(f"space: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"search.options: {e}") from None
    from jaxhp.strategies import with_enqueued
    from jaxhp.sweep import enqueued_points

    try:  # tune()'s own checks, with the task's conditions (what may be left out)
        queued, _ = enqueued_points(
            space.with_conditions(task.conditions(space)), s.get("enqueue")
        )
    except (SpaceError, TypeError) as e:
        raise ConfigError(f"search.{e}") from None
    if len(queued) > s["n_trials"]:
        raise ConfigError(
            f"search.enqueue: {len(queued)} configurations, more than "
            f"search.n_trials = {s['n_trials']}"
        )
    strategy = with_enqueued(strategy, queued)
    try:  # tune()'s own rule; the advice is the config's (n_trials=None has no TOML)
        resolve_n_trials(strategy, s["n_trials"])
    except ValueError:
        raise ConfigError(
            f"search.n_trials: the grid has {strategy.size} points but n_trials="
            f"{s['n_trials']}; set n_trials to {strategy.size} for the whole grid "
            "(fewer: a random part of it), or add grid points"
        ) from None
    return dict(
        task=task,
        space=space,
        strategy=s["strategy"],
        n_trials=s["n_trials"],
        population=s["population"],
        seed=s["seed"],
        strategy_options=s.get("options"),
        early_stopping=stopper_of(cfg),
        timeout=seconds(s["timeout"], "search.timeout") if "timeout" in s else None,
        enqueue=s.get("enqueue"),
        storage=cfg["study"]["storage"],
        study_name=cfg["study"]["name"],
        # Stored with a new study: what `jaxhp resume` rebuilds it from, and how a
        # CSV's columns became features (`jaxhp predict` encodes new rows the same way).
        metadata={"config": cfg, "features": features},
        **cfg.get("run", {}),
    )


_DURATION = re.compile(
    r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?"
)


def seconds(v: Any, key: str) -> float:
    """A duration as seconds: a positive number, or a string such as ``"90s"``,
    ``"30m"``, ``"2h"`` or ``"1h30m"``."""
    if isinstance(v, str) and v.strip():  # from TOML, or a flag's text
        m = _DURATION.fullmatch(v.strip())
        if m:
            h, mi, sec = (float(g) if g else 0.0 for g in m.groups())
            v = 3600 * h + 60 * mi + sec
        else:
            try:
                v = float(v)
            except ValueError:
                pass
    if not (_is_real(v) and 0 < v < math.inf):
        raise ConfigError(
            f"{key}: expected a positive number of seconds or a duration such as "
            f"'30m', '2h' or '1h30m', got {v!r}"
        )
    return float(v)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int(v: Any, key: str, minimum: int = 1) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ConfigError(f"{key}: expected an integer >= {minimum}, got {v!r}")


def _expect(v: Any, typ: type, key: str, what: str) -> None:
    if not isinstance(v, typ):
        raise ConfigError(f"{key}: expected {what}, got {v!r}")
