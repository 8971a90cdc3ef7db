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
got 0``) and is raised before any data is loaded or anything compiles. Reading the data
a config names is :mod:`jaxhp.tables`; :func:`build` turns a config into ``tune``'s
arguments.
"""

from __future__ import annotations

import copy
import math
import os
import re
import sys
from typing import Any

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


# The data readers moved to jaxhp.tables, still readable here (``C.read_csv``): its
# __all__ says which, looked up on first use (jaxhp.tables imports ConfigError from this
# module, so it cannot be imported at the top).
def __getattr__(name: str) -> Any:
    from jaxhp import tables

    if name in tables.__all__:
        return getattr(tables, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    _check_sections(cfg)
    cfg.setdefault("task", {})
    for section, defaults in DEFAULTS.items():
        cfg.setdefault(section, {})
        for k, v in defaults.items():
            cfg[section].setdefault(k, v)
    _check_data(cfg.get("data"))
    _check_task(cfg["task"], cfg["data"])
    _check_search(cfg["search"])
    if "early_stopping" in cfg:
        stopper_of(cfg)  # validates
    study = cfg["study"]
    if "storage" not in study:
        raise ConfigError("study.storage: missing (the path of the study's database)")
    _expect(study["storage"], str, "study.storage", "a file path")
    _expect(study["name"], str, "study.name", "a string")
    _check_run(cfg.get("run", {}), "early_stopping" in cfg)
    if not cfg.get("space"):
        raise ConfigError(
            "space: missing or empty (a [space] table of hyperparameters)"
        )
    space_of(cfg)  # every parameter well-formed
    return cfg


def _check_sections(cfg: dict[str, Any]) -> None:
    """Every section a table of known keys."""
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


def _check_data(data: dict[str, Any] | None) -> None:
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


def _check_task(task: dict[str, Any], data: dict[str, Any]) -> None:
    """Checks ``[task]``, filling in its kind and validation split."""
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


def _check_search(search: dict[str, Any]) -> None:
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


def _check_run(run: dict[str, Any], early_stopping: bool) -> None:
    if "segment_epochs" in run:
        _positive_int(run["segment_epochs"], "run.segment_epochs")
    if "eval_every" in run:
        _positive_int(run["eval_every"], "run.eval_every")
        if run["eval_every"] > 1 and early_stopping:
            raise ConfigError(
                "run.eval_every: early stopping reads the validation metric every "
                "epoch; drop [early_stopping] or set run.eval_every = 1"
            )
    if "bucketing" in run and run["bucketing"] not in ("auto", "pow2", "none"):
        raise ConfigError(
            f"run.bucketing: expected 'auto', 'pow2' or 'none', got {run['bucketing']!r}"
        )


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
def resolve_paths(cfg: dict[str, Any], base: str) -> None:
    """Make a relative ``data.path`` absolute against ``base`` (the config file's
    folder), so that the study's stored config works from any folder."""
    data = cfg.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        path = os.path.expanduser(data["path"])
        if not os.path.isabs(path):
            data["path"] = os.path.normpath(os.path.join(base, path))


def build(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`jaxhp.tune` that a parsed config describes."""
    import jaxhp
    from jaxhp.tables import load_table

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
