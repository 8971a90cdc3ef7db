"""What a population's trials came to: per-trial outcomes held as columns, and the
per-bucket report."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BestState", "BucketReport", "Outcomes", "TrialOutcome", "outcomes_of"]


@dataclass
class TrialOutcome:
    """What the engine learned about one trial."""

    trial_id: int
    status: str  # "complete" | "stopped" | "diverged"
    value: float  # metric at the best epoch (NaN when diverged)
    best_epoch: int  # 0-based, -1 if no epoch finished
    epochs_run: int
    curves: dict[
        str, np.ndarray
    ]  # per-epoch arrays, length epochs_run (+1 if diverged)
    fold_values: np.ndarray  # [F] metric per fold at the best epoch
    wall_time: (
        float  # seconds of the bucket that trained it (shared by its bucket-mates)
    )
    bucket: str


class Outcomes(Sequence[TrialOutcome]):
    """The outcomes of a population's trials, held as columns.

    ``trial_id``, ``status``, ``value``, ``best_epoch``, ``epochs_run``, ``n_curve``,
    ``wall_time`` and ``bucket`` are ``[n]`` arrays; ``fold_values`` is ``[n, F]``;
    ``curves`` is ``{series: [n, E, ...]}``, where trial ``i``'s rows are the first
    ``n_curve[i]`` (NaN after them). Indexing or iterating gives
    :class:`TrialOutcome` records, built when asked. The engine itself builds no
    per-trial object: that cost a few microseconds per trial, ~80 ms of host time in
    a round of 16,384 trials, in which the device trains for about a second on an H200.
    """

    __slots__ = (
        "trial_id",
        "status",
        "value",
        "best_epoch",
        "epochs_run",
        "n_curve",
        "curves",
        "fold_values",
        "wall_time",
        "bucket",
    )

    def __init__(self, **columns: Any):
        for name in self.__slots__:
            setattr(self, name, columns.pop(name))
        if columns:
            raise TypeError(f"unknown columns {sorted(columns)}")

    def __len__(self) -> int:
        return len(self.trial_id)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        return next(self.rows(np.asarray([range(len(self))[i]])))

    def __iter__(self):
        return self.rows()

    def take(self, idx: np.ndarray) -> Outcomes:
        """The outcomes at positions ``idx``, as columns."""
        cols = {n: getattr(self, n)[idx] for n in self.__slots__ if n != "curves"}
        return Outcomes(curves={k: v[idx] for k, v in self.curves.items()}, **cols)

    @staticmethod
    def concat(parts: Sequence[Outcomes]) -> Outcomes:
        """One set of columns from several (curves padded with NaN to the longest)."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return Outcomes.empty()
        names = list(parts[0].curves)
        n_ep = max(p.curves["train_loss"].shape[1] for p in parts)

        def padded(a):
            pad = [(0, 0), (0, n_ep - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
            return np.pad(a, pad, constant_values=np.nan)

        cols = {
            name: np.concatenate([getattr(p, name) for p in parts])
            for name in Outcomes.__slots__
            if name != "curves"
        }
        curves = {
            k: np.concatenate([padded(p.curves[k]) for p in parts]) for k in names
        }
        return Outcomes(curves=curves, **cols)

    @staticmethod
    def empty() -> Outcomes:
        i, f = np.zeros(0, np.int64), np.zeros(0)
        return Outcomes(
            trial_id=i,
            status=np.zeros(0, "U8"),
            value=f,
            best_epoch=i,
            epochs_run=i,
            n_curve=i,
            curves={},
            fold_values=np.zeros((0, 0)),
            wall_time=f,
            bucket=np.zeros(0, "U1"),
        )

    def curve_dicts(self, idx: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
        """Each trial's curves (``{series: [n_curve, ...]}``, views of the columns)."""
        idx = np.arange(len(self)) if idx is None else idx
        names = list(self.curves)
        full = next(iter(self.curves.values())).shape[1] if names else 0
        # One pass per series (iterating an array makes its row views in C), then a
        # dict per trial; only a trial with fewer rows than the columns is cut.
        rows = zip(*(list(self.curves[k][idx]) for k in names), strict=True)
        return [
            dict(zip(names, r, strict=True))
            if n == full
            else {k: x[:n] for k, x in zip(names, r, strict=True)}
            for n, r in zip(self.n_curve[idx].tolist(), rows, strict=True)
        ]

    def rows(self, idx: np.ndarray | None = None):
        """The :class:`TrialOutcome` of each position in ``idx`` (default: all)."""
        idx = np.arange(len(self)) if idx is None else idx
        for tid, st, val, be, er, cv, fv, wall, bucket in zip(
            self.trial_id[idx].tolist(),
            self.status[idx].tolist(),
            self.value[idx].tolist(),
            self.best_epoch[idx].tolist(),
            self.epochs_run[idx].tolist(),
            self.curve_dicts(idx),
            self.fold_values[idx],
            self.wall_time[idx].tolist(),
            self.bucket[idx].tolist(),
            strict=True,
        ):
            yield TrialOutcome(tid, st, val, be, er, cv, fv, wall, bucket)


@dataclass
class BucketReport:
    """Per-bucket figures: shapes, sizes and timing (for logs and benchmarks)."""

    key: Hashable
    trials: int
    padded: int
    batch: int
    steps: int
    segments: int
    compile_time: float
    run_time: float
    chunk: int | None = None  # trials per chunk when the bucket was split (memory, CPU)
    devices: int = 1  # devices the population axis was sharded over
    part: int = 0  # which chunk of its bucket this is (0: the first, or the whole)
    # Training work (FLOPs, or example-steps where the task has no cost model; see
    # ``engine.work``): what the program computed, the part of it the trials would
    # compute trained alone, and the rest by cause.
    executed: float = 0.0
    useful: float = 0.0
    pad_shape: float = 0.0  # padded width and depth of training slots
    pad_rows: float = 0.0  # padded and idle batch rows of training slots
    frozen: float = 0.0  # slots that did not train (done, stopped, diverged, empty)
    unit: str = "flop"
    sizes: tuple = ()  # the population sizes it ran at, when compaction shrank it


@dataclass
class BestState:
    trial_id: int
    value: float  # oriented (higher is better)
    trainable: Any
    state: Any  # host copy of the trial's best-epoch state, [F, ...]
    hp: dict[str, np.ndarray]  # the trial's hyperparameters as 0-d arrays


def outcomes_of(
    sign: float,
    flags: tuple,
    curves: list[dict],
    ids: np.ndarray,
    wall: np.ndarray | float,
    label: str,
) -> tuple[Outcomes, tuple[float, int] | None]:
    """Outcomes of the trials ``ids`` (the first ``len(ids)`` slots of ``flags`` and
    ``curves``, each trial trained from the first of ``curves``' epochs), and the best
    trial's (oriented value, row), if any. Columns for all trials at once, with no
    per-trial Python: a loop of NumPy calls per trial costs microseconds each, which
    adds up at 16,384 trials."""
    size = len(ids)
    diverged, stopped, epochs_run, best_value, best_epoch = (
        np.asarray(a)[:size] for a in flags
    )
    cat = (
        {k: np.concatenate([c[k] for c in curves], 0) for k in curves[0]}
        if curves
        else {}
    )
    # [size, E, ...], each trial's rows contiguous. A trial trains from its first epoch
    # until it goes inactive: its rows are a prefix, and train_loss is non-NaN exactly
    # where it trained.
    by_trial = {
        k: np.ascontiguousarray(np.moveaxis(v[:, :size], 1, 0)) for k, v in cat.items()
    }
    n_curve = (~np.isnan(by_trial["train_loss"])).sum(1)
    has_value = (best_epoch >= 0) & ~diverged
    values = np.where(has_value, sign * best_value.astype(np.float64), np.nan)
    fold_values = np.where(
        (best_epoch >= 0)[:, None],
        by_trial["value_folds"][np.arange(size), np.maximum(best_epoch, 0)],
        np.nan,
    )
    status = np.where(diverged, "diverged", np.where(stopped, "stopped", "complete"))
    outcomes = Outcomes(
        trial_id=np.asarray(ids, np.int64),
        status=status,
        value=values,
        best_epoch=best_epoch.astype(np.int64),
        epochs_run=epochs_run.astype(np.int64),
        n_curve=n_curve,
        curves=by_trial,
        fold_values=fold_values,
        wall_time=np.broadcast_to(np.asarray(wall, np.float64), (size,)).copy(),
        bucket=np.full(size, label),
    )
    cand = np.where(~diverged & (best_epoch >= 0), best_value, -np.inf)
    if size == 0:
        return outcomes, None
    j = int(np.argmax(cand))
    return outcomes, ((float(cand[j]), j) if np.isfinite(cand[j]) else None)
