"""The Task: data split into folds, plus a family of Trainables (one per shape bucket).

A task turns a population's decoded hyperparameters into per-trial arrays (filling
defaults, mapping string choices to codes), says which shape bucket each trial belongs to,
and builds the (static, hashable) Trainable for a bucket. The engine does the rest.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxhp.space import Choice, Fixed, Float, Int, Space, SpaceError
from jaxhp.tasks.data import FoldData
from jaxhp.trainable import Trainable

__all__ = ["Task", "TrainableTask", "ENGINE_HPARAMS", "next_pow2", "next_pow2_array"]

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

    def flops_per_row(self, trainable: Trainable) -> float:
        """Training FLOPs per example of a bucket's Trainable, for the bucket
        planner's cost model; 0 (unknown) makes it weigh steps and compiles only."""
        del trainable
        return 0.0

    def trial_flops_per_row(self, trainable: Trainable, hp: Mapping) -> np.ndarray:
        """``[n]``: each trial's training FLOPs per example at its own shape (useful
        work); by default the bucket's, so that padding counts as none."""
        return np.full(len(hp["batch_size"]), self.flops_per_row(trainable), float)


class TrainableTask(Task):
    """A user's own :class:`~jaxhp.Trainable` on user arrays.

    Every parameter of the space is handed to the Trainable in ``hp`` (string choices as
    the index into ``Choice.values``); ``batch_size`` and ``epochs`` also drive the engine.

    Args:
        trainable: the model (see :mod:`jaxhp.trainable`).
        X, y: training data (``X``: ``[N, ...]``).
        metric: the key of ``evaluate``'s result to optimise.
        direction: ``"maximize"`` or ``"minimize"``.
        val_fraction, folds, X_val, y_val: the validation (see ``MLPClassifier``).
        stratify: stratify splits on ``y`` (classification).
        standardize: standardise inputs with each fold's training statistics.
        seed: seed of the split.
        **defaults: default hyperparameters, e.g. ``batch_size=32, epochs=10``.

    Example:
        >>> task = TrainableTask(MyCNN(), X, y, metric="accuracy", direction="maximize",
        ...                      folds=3, batch_size=32, epochs=10)
    """

    open_names = True

    def __init__(
        self,
        trainable: Trainable,
        X: Any,
        y: Any,
        *,
        metric: str,
        direction: str = "maximize",
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

        for attr in ("init", "step", "evaluate"):
            if not callable(getattr(trainable, attr, None)):
                raise TypeError(
                    f"trainable has no {attr}() method; see jaxhp.Trainable"
                )
        if direction not in ("maximize", "minimize"):
            raise ValueError(
                f"direction must be 'maximize' or 'minimize', got {direction!r}"
            )
        self.defaults = {"batch_size": 32, "epochs": 10, **defaults}
        self.limits = {"batch_size": (1, math.inf, True), "epochs": (1, math.inf, True)}
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
        self.metric = metric
        self.direction = direction

    def trainable(self, hp: Mapping[str, np.ndarray]) -> Trainable:
        return self._trainable
