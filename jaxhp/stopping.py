"""Per-trial early stopping and pruning as pure functions over the population axis.

A stopper is called once per epoch, inside the compiled program, with a :class:`Report`
of the population: each trial's validation value (oriented so that higher is better),
the raw metric, which trials trained this epoch (``valid``) and their epoch index. It
returns which of them to stop. The engine freezes a stopped trial by mask (its state
stays bit for bit), keeps the weights of its best epoch and records it as ``stopped``.

Stoppers compose: ``Patience(5) | Median(warmup=3)`` stops a trial when either would.

The comparison set of ``Median``, ``Percentile``, ``SuccessiveHalving`` and
``Hyperband`` is the trials of the same compiled population (a bucket, or a chunk of one
split for a ``memory_budget``) that reach the same epoch together (they train in
lockstep), and for successive halving and Hyperband also every earlier result recorded
at the same rung: each rung keeps a history in the stopper's state, so with slot
recycling (``tune(recycle=True)``), where trials reach a rung at different times, a
trial is ranked against everything that reached the rung before it, as in ASHA.
``Median`` and ``Percentile`` compare the latest values of the population's trials,
a trial that no longer trains at the value it last reported; under recycling the
trials reporting at the same boundary may be at different epochs. A mask saves no
FLOPs inside a compiled segment: compute is saved when every trial of a bucket has
stopped, which ends its program early.

Semantics, matched to the papers and to Optuna:

- ``Median(warmup, min_trials)`` = ``Percentile(50, ...)``: from epoch ``warmup`` on,
  stop a trial whose best value so far is worse than the median of the population's
  latest values, a stopped trial's last one included: the median stopping rule
  (Golovin et al. 2017) with the stopped trials among the finished ones, as in Ray
  Tune. Optuna's MedianPruner compares with completed trials only, at the same step
  (``n_warmup_steps``, ``n_startup_trials``); a population reaches each epoch together
  and has no completed trials yet.
- ``Percentile(p)``: keep the top ``p`` percent: stop a trial whose best value so far is
  worse than the ``100 - p``-th percentile (oriented) of the same latest values.
- ``Threshold(lower, upper, warmup)``: stop a trial whose raw metric leaves
  ``[lower, upper]`` or is not finite.
- ``SuccessiveHalving(min_resource, eta)`` (alias ``ASHA``): rungs after
  ``min_resource * eta**k`` epochs; a trial reaching a rung goes on if its value there
  is in the top ``1/eta`` of every result recorded at that rung (itself included; at
  least the best goes on), else it stops: ASHA's rule (Li et al. 2020) and Optuna's
  SuccessiveHalvingPruner. When a population reaches a rung together it is synchronous
  successive halving (Jamieson & Talwalkar 2016; Li et al. 2018): the best
  ``n // eta`` go on.
- ``Hyperband(min_resource, max_resource, eta)``: ``s_max + 1`` brackets,
  ``s_max = floor(log_eta(max_resource / min_resource))``. Li et al.'s bracket ``s``
  starts ``n_s = ceil((s_max + 1) / (s + 1) * eta**s)`` trials at
  ``max_resource * eta**-s`` epochs and halves them; here each bracket is a successive
  halving whose first rung is ``min_resource * eta**(s_max - s)``, and the population's
  slots are shared among the brackets in proportion to ``n_s`` (the most aggressive
  bracket gets the most trials).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxhp.trainable import tree_where

__all__ = [
    "ASHA",
    "AnyOf",
    "Hyperband",
    "Median",
    "Patience",
    "Percentile",
    "Report",
    "Stopper",
    "StopperBase",
    "SuccessiveHalving",
    "Threshold",
    "patience",
]


class Report(NamedTuple):
    """What a stopper sees each epoch (all ``[P]``)."""

    value: jax.Array  # float32, oriented: higher is better
    raw: jax.Array  # float32, the metric as reported
    valid: jax.Array  # bool: trained this epoch without diverging
    epoch: jax.Array  # int32, 0-based epoch just finished


class Stopper(Protocol):
    """``init(n) -> state``; ``update(state, report) -> (state, stop[P])``.

    Implementations must be hashable (they are static inside the compiled program).
    Two members are optional; :class:`StopperBase` declares them with their defaults,
    and :func:`is_per_trial` and :func:`reset` read them (with the same defaults) from
    a stopper that does not inherit from it:

    - ``per_trial: bool`` (default False): each trial's decision reads that trial's
      reports alone. The engine splits a population for speed (CPU chunks) only under
      a per-trial stopper, since a chunk would otherwise be a comparison set.
    - ``reset(state, fill, fresh) -> state``: the state with the slots ``fill`` taken
      by new trials (slot recycling); ``fresh`` is ``init(n)``'s state. Default: every
      leaf is per-trial (``[P, ...]``) and takes ``fresh``'s rows; a stopper with
      population-wide state (rung histories) defines its own.
    """

    def init(self, n: int) -> Any: ...

    def update(self, state: Any, report: Report) -> tuple[Any, jax.Array]: ...


class StopperBase:
    """An optional base class declaring a stopper's optional members with their
    defaults (see :class:`Stopper`)."""

    #: Whether each trial's decision depends on that trial alone (``Patience``,
    #: ``Threshold``) rather than on the other trials of its compiled population
    #: (``Median``, ``Percentile``, successive halving, Hyperband).
    per_trial: ClassVar[bool] = False

    def reset(self, state: Any, fill: jax.Array, fresh: Any) -> Any:
        return tree_where(fill, fresh, state)


class _Composable(StopperBase):
    def __or__(self, other: Any) -> AnyOf:
        mine = self.stoppers if isinstance(self, AnyOf) else (self,)
        theirs = other.stoppers if isinstance(other, AnyOf) else (other,)
        return AnyOf(mine + theirs)


@dataclass(frozen=True)
class AnyOf(_Composable):
    """Stop a trial when any of ``stoppers`` would (``a | b`` builds one)."""

    stoppers: tuple

    @property
    def per_trial(self) -> bool:
        return all(is_per_trial(s) for s in self.stoppers)

    def init(self, n: int):
        return tuple(s.init(n) for s in self.stoppers)

    def reset(self, state, fill, fresh):
        return tuple(
            reset(s, st, fill, fr)
            for s, st, fr in zip(self.stoppers, state, fresh, strict=True)
        )

    def update(self, state, report: Report):
        out, stop = [], jnp.zeros_like(report.valid)
        for s, st in zip(self.stoppers, state, strict=True):
            st, k = s.update(st, report)
            out.append(st)
            stop = stop | k
        return tuple(out), stop


class PatienceState(NamedTuple):
    best: jax.Array  # [P] best oriented value seen
    wait: jax.Array  # [P] epochs since the last improvement


@dataclass(frozen=True)
class Patience(_Composable):
    """Stop a trial after ``patience`` epochs without improving by more than ``min_delta``.

    The rule of Keras' ``EarlyStopping``: an epoch counts as an improvement when the
    validation value beats the best so far by more than ``min_delta`` (in the direction of
    the task's metric).

    Example:
        >>> jaxhp.tune(task, space, early_stopping=jaxhp.stopping.Patience(5))
    """

    patience: int
    min_delta: float = 0.0
    per_trial = True

    def __post_init__(self):
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(
                f"Patience: patience must be an integer >= 1, got {self.patience!r}"
            )
        if not self.min_delta >= 0:
            raise ValueError(
                f"Patience: min_delta must be >= 0, got {self.min_delta!r}"
            )

    def init(self, n: int) -> PatienceState:
        return PatienceState(
            jnp.full((n,), -jnp.inf, jnp.float32), jnp.zeros((n,), jnp.int32)
        )

    def update(self, state: PatienceState, report: Report):
        value, valid = report.value, report.valid
        better = value > state.best + self.min_delta
        best = jnp.where(valid & better, value, state.best)
        wait = jnp.where(valid, jnp.where(better, 0, state.wait + 1), state.wait)
        return PatienceState(best, wait), valid & (wait >= self.patience)


patience = Patience


def is_per_trial(stopper: Any) -> bool:
    """True when no stopper, or one whose decisions for a trial read that trial alone
    (a user's stopper without ``per_trial = True`` counts as population-wide)."""
    return stopper is None or bool(getattr(stopper, "per_trial", StopperBase.per_trial))


def _check_int(name: str, v: Any, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")


class PercentileState(NamedTuple):
    best: jax.Array  # [P] best oriented value so far
    last: jax.Array  # [P] the latest oriented value reported (NaN: none yet)


@dataclass(frozen=True)
class Percentile(_Composable):
    """Keep the top ``percentile`` percent of the trials (after warm-up).

    A trial is stopped when its best value so far is worse than the ``100 - percentile``
    percentile of the population's latest values: each trial's value this epoch, or,
    for a trial that did not train this epoch (stopped, diverged or finished), the last
    value it reported. Checked once at least ``min_trials`` trials have reported and
    from epoch ``warmup`` (0-based) on.

    Why the stopped trials stay in: were they left out, every epoch's cut would be the
    percentile of the survivors alone, and ``Median`` would halve the population at
    every epoch (of 8 trials, 4, then 2, then 1 left) instead of stopping the worse
    half. Keeping a stopped trial at its last value is the median stopping
    rule's reference set (Golovin et al. 2017), where the stopped trials are among the
    finished ones, as in Ray Tune's ``MedianStoppingRule``. Under slot recycling a
    refilled slot's new trial replaces the old one's value.
    """

    percentile: float = 50.0
    warmup: int = 0
    min_trials: int = 4

    def __post_init__(self):
        if not 0 < self.percentile < 100:
            raise ValueError(
                f"Percentile: percentile must be in (0, 100), got {self.percentile!r}"
            )
        _check_int("Percentile: warmup", self.warmup, 0)
        _check_int("Percentile: min_trials", self.min_trials, 1)

    def init(self, n: int):
        return PercentileState(
            best=jnp.full((n,), -jnp.inf, jnp.float32),
            last=jnp.full((n,), jnp.nan, jnp.float32),
        )

    def update(self, state: PercentileState, report: Report):
        valid = report.valid & jnp.isfinite(report.value)
        best = jnp.where(valid, jnp.maximum(state.best, report.value), state.best)
        last = jnp.where(valid, report.value, state.last)
        cut = jnp.nanpercentile(last, 100.0 - self.percentile)
        reported = jnp.sum(jnp.isfinite(last))
        ready = (reported >= self.min_trials) & (report.epoch >= self.warmup)
        return PercentileState(best, last), report.valid & ready & (best < cut)


def Median(warmup: int = 0, min_trials: int = 4) -> Percentile:  # noqa: N802
    """Stop a trial whose best value so far is worse than the median at this epoch."""
    return Percentile(50.0, warmup, min_trials)


@dataclass(frozen=True)
class Threshold(_Composable):
    """Stop a trial whose raw metric falls below ``lower``, rises above ``upper`` or is
    not finite, from epoch ``warmup`` (0-based) on."""

    lower: float | None = None
    upper: float | None = None
    warmup: int = 0
    per_trial = True

    def __post_init__(self):
        if self.lower is None and self.upper is None:
            raise ValueError("Threshold: give lower, upper or both")
        if (
            self.lower is not None
            and self.upper is not None
            and not self.lower <= self.upper
        ):
            raise ValueError(f"Threshold: lower {self.lower} > upper {self.upper}")
        _check_int("Threshold: warmup", self.warmup, 0)

    def init(self, n: int):
        return None

    def update(self, state, report: Report):
        raw = report.raw
        bad = ~jnp.isfinite(raw)
        if self.lower is not None:
            bad |= raw < self.lower
        if self.upper is not None:
            bad |= raw > self.upper
        return state, report.valid & (report.epoch >= self.warmup) & bad


def _rungs(first: int, eta: int, horizon: int) -> np.ndarray:
    """Epoch counts ``first * eta**k`` up to ``horizon``."""
    out, r = [], first
    while r <= horizon:
        out.append(r)
        r *= eta
    return np.asarray(out, np.int32)


#: Results kept per rung by successive halving and Hyperband (the most recent).
RUNG_HISTORY = 256


class RungHistory(NamedTuple):
    """Results recorded at each rung: ``values [R, K]`` (a ring of the last ``K``),
    ``count [R]`` (how many were ever recorded)."""

    values: jax.Array
    count: jax.Array


def _history(n_rungs: int, capacity: int) -> RungHistory:
    return RungHistory(
        jnp.full((n_rungs, capacity), -jnp.inf, jnp.float32),
        jnp.zeros((n_rungs,), jnp.int32),
    )


def _halve(
    report: Report, members: jax.Array, rungs: np.ndarray, eta: int, hist: RungHistory
) -> tuple[RungHistory, jax.Array]:
    """ASHA's rule among ``members``: a trial reaching rung ``k`` goes on if it is in
    the top ``1/eta`` of every result recorded at that rung, itself and the trials
    reaching it now included (at least the best one goes on, as in Optuna's
    SuccessiveHalvingPruner); its result is then recorded at the rung."""
    values, count = hist
    cap = values.shape[1]
    n_pop = report.value.shape[0]
    stop = jnp.zeros_like(report.valid)
    for k, r in enumerate(rungs):
        here = members & report.valid & (report.epoch + 1 == int(r))
        score = jnp.where(here & jnp.isfinite(report.value), report.value, -jnp.inf)
        n_hist = jnp.minimum(count[k], cap)
        past = jnp.sort(jnp.where(jnp.arange(cap) < n_hist, values[k], -jnp.inf))
        now = jnp.sort(jnp.where(here, score, -jnp.inf))
        better = (cap - jnp.searchsorted(past, score, side="right")) + (
            n_pop - jnp.searchsorted(now, score, side="right")
        )
        keep_n = jnp.maximum((n_hist + jnp.sum(here)) // eta, 1)
        stop |= here & ((better >= keep_n) | ~jnp.isfinite(score))
        pos = jnp.where(here, (count[k] + jnp.cumsum(here) - 1) % cap, cap)
        values = values.at[k, pos].set(score, mode="drop")
        count = count.at[k].add(jnp.sum(here).astype(count.dtype))
    return RungHistory(values, count), stop


def reset(stopper: Any, state: Any, fill: jax.Array, fresh: Any) -> Any:
    """A stopper's state with the slots ``fill`` reset for new trials (slot recycling):
    per-trial leaves take ``fresh``'s rows; a stopper with population-wide state (rung
    histories) says how with its own ``reset``."""
    own = getattr(stopper, "reset", None)
    if own is not None:
        return own(state, fill, fresh)
    return StopperBase.reset(stopper, state, fill, fresh)


@dataclass(frozen=True)
class SuccessiveHalving(_Composable):
    """Rungs after ``min_resource * eta**k`` epochs; the top ``1/eta`` go on.

    ``max_resource`` bounds the rungs (default 4096 epochs; a trial's own ``epochs``
    ends it anyway). Each rung keeps its last ``history`` results, so with slot
    recycling a trial reaching a rung late is ranked against the earlier ones (ASHA).
    """

    min_resource: int = 1
    eta: int = 3
    max_resource: int = 1 << 12
    history: int = RUNG_HISTORY  # results kept per rung (the most recent)

    def __post_init__(self):
        _check_int("SuccessiveHalving: min_resource", self.min_resource, 1)
        _check_int("SuccessiveHalving: eta", self.eta, 2)
        _check_int("SuccessiveHalving: max_resource", self.max_resource, 1)
        _check_int("SuccessiveHalving: history", self.history, 1)

    def rungs(self) -> np.ndarray:
        return _rungs(self.min_resource, self.eta, self.max_resource)

    def init(self, n: int) -> RungHistory:
        return _history(len(self.rungs()), self.history)

    def update(self, state: RungHistory, report: Report):
        return _halve(
            report, jnp.ones_like(report.valid), self.rungs(), self.eta, state
        )

    def reset(self, state, fill, fresh):
        return state  # the rung history outlives the trials that wrote it


ASHA = SuccessiveHalving


@dataclass(frozen=True)
class Hyperband(_Composable):
    """Brackets of successive halving with first rungs ``min_resource * eta**s``."""

    min_resource: int = 1
    max_resource: int = 81
    eta: int = 3

    def __post_init__(self):
        _check_int("Hyperband: min_resource", self.min_resource, 1)
        _check_int("Hyperband: eta", self.eta, 2)
        _check_int("Hyperband: max_resource", self.max_resource, self.min_resource)

    @property
    def s_max(self) -> int:
        return int(
            math.floor(math.log(self.max_resource / self.min_resource, self.eta) + 1e-9)
        )

    def bracket_sizes(self) -> np.ndarray:
        """Li et al.'s ``n_s`` for bracket ``s`` (s = s_max is the most aggressive
        there; here bracket ``b = s_max - s`` starts at rung ``min_resource * eta**b``)."""
        s_max = self.s_max
        n = [math.ceil((s_max + 1) / (s + 1) * self.eta**s) for s in range(s_max + 1)]
        return np.asarray(n[::-1], float)  # index b: first rung min_resource * eta**b

    def brackets(self, n: int) -> np.ndarray:
        """The bracket of each of ``n`` slots, in proportion to :meth:`bracket_sizes`."""
        share = np.cumsum(self.bracket_sizes())
        share = share / share[-1]
        pos = (np.arange(n) + 0.5) / n
        return np.searchsorted(share, pos).astype(np.int32)

    def _bracket_rungs(self, b: int) -> np.ndarray:
        return _rungs(self.min_resource * self.eta**b, self.eta, self.max_resource)

    def init(self, n: int):
        hists = tuple(
            _history(len(self._bracket_rungs(b)), RUNG_HISTORY)
            for b in range(self.s_max + 1)
        )
        return jnp.asarray(self.brackets(n)), hists

    def update(self, state, report: Report):
        bracket, hists = state
        stop = jnp.zeros_like(report.valid)
        out = []
        for b in range(self.s_max + 1):
            h, s_b = _halve(
                report, bracket == b, self._bracket_rungs(b), self.eta, hists[b]
            )
            out.append(h)
            stop |= s_b
        return (bracket, tuple(out)), stop

    def reset(self, state, fill, fresh):
        return state  # brackets belong to slots; rung histories outlive trials
