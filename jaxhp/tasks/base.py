"""The Task: data split into folds, plus a family of Trainables (one per shape bucket).

A task turns a population's decoded hyperparameters into per-trial arrays (filling
defaults, mapping string choices to codes), says which shape bucket each trial belongs to,
and builds the (static, hashable) Trainable for a bucket. The engine does the rest.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers as numbers_
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxhp.space import Choice, Fixed, Float, Int, Space, SpaceError
from jaxhp.tasks.check import TrainableError, check_hashable, check_trainable
from jaxhp.tasks.data import FoldData
from jaxhp.trainable import Trainable, capabilities

__all__ = [
    "ENGINE_HPARAMS",
    "Task",
    "TrainableTask",
    "next_pow2",
    "next_pow2_array",
    "pad_max",
]

#: Hyperparameters the engine itself reads: the batch size and the epoch budget.
ENGINE_HPARAMS = ("batch_size", "epochs")


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def next_pow2_array(n: Any) -> np.ndarray:
    """:func:`next_pow2` of every element of an integer array, without a Python loop
    (``frexp``'s exponent of ``n - 1`` is its bit length; exact below 2**53)."""
    m = np.maximum(np.asarray(n, np.int64) - 1, 0)
    return np.left_shift(1, np.frexp(m.astype(np.float64))[1].astype(np.int64))


def _value_range(p) -> tuple[Any, Any] | None:
    if isinstance(p, (Float, Int)):
        return p.low, p.high
    if isinstance(p, Choice) and p.numeric:
        return min(p.values), max(p.values)
    if isinstance(p, Fixed) and p.numeric:
        return p.value, p.value
    return None


class Task:
    """Base class of tasks. Subclasses set the attributes below and ``trainable``.

    Attributes:
        data: the folds.
        metric: name of the objective in ``evaluate``'s metrics.
        direction: ``"maximize"`` or ``"minimize"``.
        defaults: every tunable hyperparameter with its default value.
        vocab: for categorical hyperparameters, the allowed strings (their codes are the
            positions in this tuple).
        limits: ``{name: (low, high, integer)}``, the values a hyperparameter may take.
    """

    data: FoldData
    metric: str
    direction: str
    defaults: dict[str, Any]
    vocab: dict[str, tuple[str, ...]] = {}
    limits: dict[str, tuple[float, float, bool]] = {}
    open_names: bool = False  # accept names that are not in ``defaults``
    # How the error for an unknown name ends, after the list of ``defaults``: a task
    # whose ``family`` admits more names says which.
    more_names: str = ""

    def family(self, name: str) -> str:
        """The hyperparameter whose rules (limits, vocabulary) ``name`` follows: itself,
        unless the task has a family of names, like the MLP's ``width_<i>``."""
        return name

    # -- validation -------------------------------------------------------------
    def check_space(self, space: Space) -> None:
        """Raise :class:`SpaceError` naming the parameter if ``space`` does not fit."""
        for name, p in space.items():
            self.check_param(name, p)
        for name in ENGINE_HPARAMS:
            if name not in space and name not in self.defaults:
                raise SpaceError(
                    f"{name}: not in the space and the task has no default"
                )

    def check_param(self, name: str, p: Any, label: str | None = None) -> None:
        """Raise :class:`SpaceError`, starting with ``label`` (default: ``name``), if
        parameter ``p`` cannot be the task's hyperparameter ``name``."""
        label = name if label is None else label
        rules = self.family(name)
        if rules not in self.defaults and not self.open_names:
            raise SpaceError(
                f"{label}: {type(self).__name__} has no hyperparameter {name!r}; "
                f"it tunes {sorted(self.defaults)}{self.more_names}"
            )
        if rules in self.vocab:
            vocab = list(self.vocab[rules])
            if not isinstance(p, (Choice, Fixed)):
                raise SpaceError(f"{label}: use Choice({vocab}) or Fixed")
            for v in p.values if isinstance(p, Choice) else [p.value]:
                if v not in vocab:
                    raise SpaceError(
                        f"{label}: unknown value {v!r}; choose from {vocab}"
                    )
            return
        if rules in self.limits:
            lo, hi, integer = self.limits[rules]
            rng = _value_range(p)
            if rng is None:
                raise SpaceError(f"{label}: must be numeric, got {p!r}")
            if integer and isinstance(p, Float):
                raise SpaceError(f"{label}: must be an integer; use Int or Choice")
            values = p.values if isinstance(p, Choice) else [getattr(p, "value", 0)]
            if integer and not all(float(v).is_integer() for v in values):
                raise SpaceError(f"{label}: must be an integer, got {p!r}")
            if rng[0] < lo or rng[1] > hi:
                raise SpaceError(f"{label}: values must lie in [{lo}, {hi}], got {p!r}")

    def conditions(self, space: Space) -> dict[str, dict[str, list]]:
        """``{name: when}``: which of ``space``'s hyperparameters matter only to some
        configurations, as :class:`~jaxhp.space.Float`'s ``when=`` would say it.
        ``tune`` gives them to the parameters that have no ``when=`` of their own. A
        task that knows none returns ``{}``."""
        del space
        return {}

    def check_defaults(self, given: Mapping[str, Any]) -> None:
        """Raise :class:`SpaceError` naming a default given to the task (a keyword
        argument) that its hyperparameter cannot take, before any data is used."""
        for name, value in given.items():
            p, label = Fixed(value), f"{name}={value!r} (a default)"
            p._check(label)
            self.check_param(name, p, label)

    def hparams(
        self, space: Space, values: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Per-trial arrays for every hyperparameter: ``{name: [P]}``, defaults filled."""
        n = len(np.atleast_1d(next(iter(values.values()))))
        out: dict[str, np.ndarray] = {}
        names = dict.fromkeys([*self.defaults, *space])
        for name in names:
            p = space.get(name)
            if name in self.vocab:
                vocab = self.vocab[name]
                if p is None:
                    codes = np.full(n, vocab.index(self.defaults[name]))
                elif isinstance(p, Fixed):
                    codes = np.full(n, vocab.index(p.value))
                else:
                    # The choice's index -> the vocabulary's code, once per choice.
                    to_code = np.asarray([vocab.index(v) for v in p.values])
                    codes = to_code[np.asarray(values[name], np.int64)]
                out[name] = codes.astype(np.int32)
                continue
            if p is None:
                v = np.full(n, self.defaults[name])
            elif isinstance(p, Fixed):
                v = np.full(n, p.value if p.numeric else 0)
            else:
                v = np.asarray(values[name])
            if isinstance(p, Choice) and not p.numeric:
                v = v.astype(np.int32)  # index into the choice's values
            # An integer hyperparameter given as 64.0 (checked integral) is still one.
            integer = self.limits.get(self.family(name), (0, 0, False))[2]
            out[name] = (
                v.astype(np.int32)
                if integer or v.dtype.kind in "iub"
                else v.astype(np.float32)
            )
        return out

    # -- buckets ----------------------------------------------------------------
    def shape_keys(self, hp: Mapping[str, np.ndarray]) -> Sequence[Hashable]:
        """The shape bucket of each trial, before merging (see ``engine.plan_buckets``):
        a list of hashables, or an integer array (grouped without a per-trial loop)."""
        return np.zeros(len(hp["batch_size"]), np.int64)

    def trainable(self, hp: Mapping[str, np.ndarray]) -> Trainable:
        """The Trainable for a bucket whose trials have hyperparameters ``hp``."""
        raise NotImplementedError

    def can_share(self, hp: Mapping[str, np.ndarray]) -> bool:
        """Whether the trials ``hp`` may train as one bucket (one compiled program).
        ``bucketing="auto"`` merges only buckets whose union can; a task whose shape
        keys are configurations that cannot be padded into one another says no."""
        del hp
        return True

    def flops_per_row(self, trainable: Trainable) -> float:
        """Training FLOPs per example row of a bucket's Trainable (forward and
        backward), for ``bucketing="auto"``'s cost model; 0.0 when unknown."""
        return capabilities(trainable).flops_per_row


def pad_max(configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``TrainableTask``'s ``pad="max"``: each static hyperparameter's largest value."""
    return {k: max(c[k] for c in configs) for k in configs[0]}


@dataclass(frozen=True)
class _Unpadded:
    """The "Trainable" of trials whose static configurations differ and cannot be
    padded into one: its cost is infinite (``bucketing="auto"`` never builds such a
    bucket) and training it says why."""

    task: str
    configs: tuple[str, ...]

    def _refuse(self, *args: Any) -> Any:
        raise TrainableError(
            f"{self.task}: trials with different static hyperparameters "
            f"({' / '.join(self.configs[:3])}) cannot share one compiled program; "
            "use bucketing='auto' or 'pow2' (and not recycle=True), or tell "
            "TrainableTask how to pad them with pad=..."
        )

    init = step = evaluate = _refuse


def _defaults_of(make: Any) -> dict[str, Any]:
    """The keyword defaults of a factory (a dataclass's field defaults)."""
    try:
        sig = inspect.signature(make)
    except (TypeError, ValueError):
        return {}
    return {
        k: v.default
        for k, v in sig.parameters.items()
        if v.default is not inspect.Parameter.empty
    }

    def trial_flops_per_row(self, trainable: Trainable, hp: Mapping) -> np.ndarray:
        """``[n]``: each trial's training FLOPs per example at its own shape (useful
        work); by default the bucket's, so that padding counts as none."""
        return np.full(len(hp["batch_size"]), self.flops_per_row(trainable), float)


class TrainableTask(Task):
    """A user's own :class:`~jaxhp.Trainable` on user arrays.

    Every parameter of the space is handed to the Trainable in ``hp`` (string choices as
    the index into ``Choice.values``); ``batch_size`` and ``epochs`` also drive the engine.

    **Static hyperparameters** set shapes (channels, depth, kernel size, heads): they
    cannot be traced arrays. Name them in ``static`` and pass a factory instead of a
    Trainable: ``make(**static_values) -> Trainable`` (a frozen-dataclass Trainable
    class whose fields are those names is one; a class passed without ``static``
    takes all its dataclass fields as static). The engine buckets trials by their
    static values and builds one Trainable, one compiled program, per distinct
    configuration; every strategy searches them like any other parameter. They must
    be ``Int``, or ``Choice``/``Fixed`` of integers or of categories (strings,
    booleans); the factory gets Python values (``int``, or the category itself).
    They are in ``hp`` too (integers, categories as their index), so that a model
    built for a padded configuration can mask each trial to its own.

    Args:
        trainable: a Trainable (see :mod:`jaxhp.trainable`), or with ``static`` a
            factory ``make(**static_values) -> Trainable``.
        X, y: training data (``X``: ``[N, ...]``).
        metric: the key of ``evaluate``'s result to optimise.
        direction: ``"maximize"`` or ``"minimize"``.
        static: the names of the static hyperparameters (their defaults: ``make``'s
            keyword defaults, or given as ``**defaults``).
        pad: how trials of different static configurations may share one program:
            ``pad(configs) -> config``, the configuration to build for a list of
            them (``{name: value}`` dicts); ``"max"`` takes each name's largest value.
            The Trainable built for it must then train every trial as its own
            configuration would, reading the trial's values from ``hp``. Without it,
            ``bucketing="auto"`` never merges different configurations.
        val_fraction, folds, X_val, y_val: the validation (see ``MLPClassifier``).
        stratify: stratify splits on ``y`` (classification).
        standardize: standardise inputs with each fold's training statistics.
        seed: seed of the split.
        **defaults: default hyperparameters, e.g. ``batch_size=32, epochs=10``.

    Raises:
        TrainableError: the Trainable is not hashable or misses a method; before a
            sweep (:meth:`check_space`), whatever :func:`~jaxhp.tasks.check_trainable`
            finds when tracing one trial.

    Example:
        >>> task = TrainableTask(CNN, X, y, static=("channels", "depth"),
        ...                      metric="accuracy", batch_size=32, epochs=10)
        >>> space = Space(channels=Choice([8, 16]), depth=Int(1, 3),
        ...               learning_rate=Float(1e-4, 1e-2, log=True))
    """

    open_names = True

    def __init__(
        self,
        trainable: Any,
        X: Any,
        y: Any,
        *,
        metric: str,
        direction: str = "maximize",
        static: Sequence[str] | None = None,
        pad: Callable[[list[dict[str, Any]]], Mapping[str, Any]] | str | None = None,
        val_fraction: float | None = None,
        folds: int | None = None,
        X_val: Any = None,
        y_val: Any = None,
        stratify: bool = False,
        standardize: bool = True,
        seed: int = 0,
        **defaults: Any,
    ):
        from jaxhp.tasks.data import check_arrays, make_folds, stack_folds

        if static is None:
            static = (
                tuple(f.name for f in dataclasses.fields(trainable) if f.init)
                if isinstance(trainable, type) and dataclasses.is_dataclass(trainable)
                else ()
            )
        if isinstance(static, str):
            static = (static,)
        self.static = tuple(static)
        self._make = trainable if (self.static or isinstance(trainable, type)) else None
        if self._make is not None:
            if not callable(trainable):
                raise TrainableError(
                    f"static={self.static}: pass a factory make(**static_values) -> "
                    f"Trainable (e.g. the Trainable's class), got {trainable!r}"
                )
            self._label = getattr(trainable, "__name__", type(trainable).__name__)
        else:
            self._label = type(trainable).__name__
            check_hashable(trainable, self._label)
            for attr in ("init", "step", "evaluate"):
                if not callable(getattr(trainable, attr, None)):
                    raise TrainableError(
                        f"{self._label} has no {attr}() method; a Trainable needs "
                        "init(key, hp), step(state, batch, hp) and "
                        "evaluate(state, data, hp) (see jaxhp.Trainable)"
                    )
        if pad is not None and not (pad == "max" or callable(pad)):
            raise ValueError(f"pad must be 'max' or a function, got {pad!r}")
        if pad is not None and not self.static:
            raise ValueError("pad= needs static hyperparameters (static=...)")
        self._pad = pad_max if pad == "max" else pad
        if direction not in ("maximize", "minimize"):
            raise ValueError(
                f"direction must be 'maximize' or 'minimize', got {direction!r}"
            )
        made = _defaults_of(trainable) if self._make is not None else {}
        static_defaults = {k: made[k] for k in self.static if k in made}
        self.defaults = {"batch_size": 32, "epochs": 10, **static_defaults, **defaults}
        self.limits = {"batch_size": (1, math.inf, True), "epochs": (1, math.inf, True)}
        self.vocab = {}
        for name in self.static:
            if name in ENGINE_HPARAMS:
                raise SpaceError(
                    f"{name}: the engine reads it; it cannot be a static hyperparameter"
                )
            if name in self.defaults:
                self._static_rules(name, None)
        self.check_defaults(defaults)
        X, y = check_arrays(X, y)
        if val_fraction is None and folds is None and X_val is None:
            val_fraction = 0.2
        splits = make_folds(
            X,
            y,
            val_fraction=val_fraction,
            folds=folds,
            X_val=X_val,
            y_val=y_val,
            stratify=stratify,
            seed=seed,
        )
        self.data = stack_folds(splits, standardize=standardize)
        self._trainable = trainable
        self._built: dict[tuple, Any] = {}  # static configuration -> Trainable
        self._config_ids: dict[tuple, int] = {}  # static configuration -> shape key
        self._checked: set = set()
        self.metric = metric
        self.direction = direction

    # -- static hyperparameters -------------------------------------------------
    def _static_rules(self, name: str, p: Any) -> None:
        """Set ``name``'s rules from its parameter ``p`` (None: its default alone):
        integers (``limits``) or categories (``vocab``, in ``Choice.values``' order,
        so that a category's code is its index there)."""
        label = f"{name} (static)"
        if p is not None and not isinstance(p, (Int, Choice, Fixed)):
            raise SpaceError(
                f"{label}: a static hyperparameter sets a shape; use Int, or Choice or "
                f"Fixed of integers or categories, not {type(p).__name__}"
            )
        values = (
            list(p.values)
            if isinstance(p, Choice)
            else [p.value]
            if isinstance(p, Fixed)
            else []
        )
        if name in self.defaults:
            values.append(self.defaults[name])
        numbers = [
            isinstance(v, numbers_.Real) and not isinstance(v, bool) for v in values
        ]
        if all(numbers):
            if not all(float(v).is_integer() for v in values):
                bad = next(v for v in values if not float(v).is_integer())
                raise SpaceError(
                    f"{label}: a static hyperparameter must be an integer or a "
                    f"category, got {bad!r}"
                )
            self.limits[name] = (-math.inf, math.inf, True)
            self.vocab.pop(name, None)
        elif any(numbers):
            raise SpaceError(f"{label}: mixes numbers and categories {values!r}")
        else:
            try:
                self.vocab[name] = tuple(dict.fromkeys(values))
            except TypeError:
                raise SpaceError(
                    f"{label}: categories must be hashable, got {values!r}"
                ) from None
            self.limits.pop(name, None)

    def _register(self, space: Space) -> None:
        for name in self.static:
            self._static_rules(name, space.get(name))

    def _configs(self, hp: Mapping[str, np.ndarray]) -> tuple[list[tuple], np.ndarray]:
        """The distinct static configurations of ``hp``'s trials (Python values, in
        ``self.static``'s order) and each trial's index into them."""
        cols = np.stack(
            [np.asarray(hp[n]).astype(np.int64) for n in self.static], axis=1
        )
        uniq, inv = np.unique(cols, axis=0, return_inverse=True)
        configs = [
            tuple(
                self.vocab[n][int(v)] if n in self.vocab else int(v)
                for n, v in zip(self.static, row, strict=True)
            )
            for row in uniq.tolist()
        ]
        return configs, inv.reshape(-1)

    def _describe(self, config: tuple) -> str:
        kw = ", ".join(f"{n}={v!r}" for n, v in zip(self.static, config, strict=True))
        return f"{self._label}({kw})"

    def _build(self, config: tuple) -> Any:
        tr = self._built.get(config)
        if tr is None:
            label = self._describe(config)
            try:
                tr = self._make(**dict(zip(self.static, config, strict=True)))
            except Exception as e:
                raise TrainableError(
                    f"{label}: building the Trainable failed: {type(e).__name__}: {e}"
                ) from e
            check_hashable(tr, label)
            self._built[config] = tr
        return tr

    # -- the Task interface -----------------------------------------------------
    def check_space(self, space: Space) -> None:
        """Check the space (static hyperparameters: integers or categories, with a
        value for each), then trace one trial's ``init``, ``step`` and ``evaluate``
        (:func:`~jaxhp.tasks.check_trainable`): a mistake in the Trainable is an error
        here, before anything compiles."""
        self._register(space)
        for name in self.static:
            if name not in space and name not in self.defaults:
                raise SpaceError(
                    f"{name}: a static hyperparameter of {self._label} with no value; "
                    f"add it to the space or give TrainableTask {name}=..."
                )
        if (
            self._pad is not None
            and self._pad is pad_max
            and self.vocab.keys() & set(self.static)
        ):
            cat = sorted(self.vocab.keys() & set(self.static))[0]
            raise SpaceError(
                f"{cat}: pad='max' needs integer static hyperparameters; "
                "pass pad=a function for categories"
            )
        super().check_space(space)
        u = np.full((1, space.dim), 0.5)
        hp = self.hparams(space, space.decode(space.canonical(u)))
        tr = self.trainable(hp)
        row = {k: np.asarray(v)[0] for k, v in hp.items()}
        key = (tr, tuple(sorted((k, v.dtype.str) for k, v in row.items())))
        if key not in self._checked:
            label = (
                self._describe(self._configs(hp)[0][0]) if self.static else self._label
            )
            check_trainable(
                tr,
                row,
                self.data,
                metric=self.metric,
                batch_size=int(next_pow2(int(row["batch_size"]))),
                label=label,
            )
            self._checked.add(key)

    def hparams(
        self, space: Space, values: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        self._register(space)
        return super().hparams(space, values)

    def shape_keys(self, hp: Mapping[str, np.ndarray]) -> Sequence[Hashable]:
        """One key per distinct static configuration (0 for every trial without
        static hyperparameters)."""
        if not self.static:
            return np.zeros(len(hp["batch_size"]), np.int64)
        configs, inv = self._configs(hp)
        ids = [self._config_ids.setdefault(c, len(self._config_ids)) for c in configs]
        return np.asarray(ids, np.int64)[inv]

    def trainable(self, hp: Mapping[str, np.ndarray]) -> Any:
        if not self.static:
            if self._make is not None:  # a class without fields: one instance
                return self._build(())
            return self._trainable
        configs, _ = self._configs(hp)
        if len(configs) == 1:
            return self._build(configs[0])
        if self._pad is None:
            return _Unpadded(self._label, tuple(self._describe(c) for c in configs))
        dicts = [dict(zip(self.static, c, strict=True)) for c in configs]
        padded = dict(self._pad(dicts))
        if set(padded) != set(self.static):
            raise TrainableError(
                f"{self._label}: pad() must return a value for each of {self.static}, "
                f"got {sorted(padded)}"
            )
        return self._build(tuple(padded[n] for n in self.static))

    def can_share(self, hp: Mapping[str, np.ndarray]) -> bool:
        return (
            not self.static or self._pad is not None or len(self._configs(hp)[0]) == 1
        )

    def flops_per_row(self, trainable: Any) -> float:
        if isinstance(trainable, _Unpadded):
            return math.inf  # never a bucket, whatever the cost model says
        return capabilities(trainable).flops_per_row
