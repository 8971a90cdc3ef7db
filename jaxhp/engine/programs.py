"""A bucket's jitted programs (start, segment, refill) and the cache that holds them.

Programs are keyed by their :class:`SegmentSpec` and fold count; jit's own cache then
specialises them per population size. Plain ``jax.jit`` rather than ahead-of-time
objects keeps JAX's fast C++ dispatch. The cache is an object, so a test or a user who
wants fresh programs makes a new one instead of patching module state.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from jaxhp import stopping
from jaxhp.engine.segment import RunState, SegmentSpec, keep_of, segment
from jaxhp.engine.transfer import unrows
from jaxhp.trainable import tree_where

__all__ = ["CompileClock", "ProgramCache", "Programs", "DEFAULT_CACHE"]


def _init_members(trainable, keys: jax.Array, hp: dict, n_folds: int):
    def member(k, f, hpm):
        return trainable.init(
            jax.random.fold_in(jax.random.fold_in(k, f), 2**31 - 1), hpm
        )

    over_folds = jax.vmap(member, in_axes=(None, 0, None))
    return jax.vmap(over_folds, in_axes=(0, None, 0))(keys, jnp.arange(n_folds), hp)


def start(
    spec: SegmentSpec, n_folds: int, seed: jax.Array, rows: Any
) -> tuple[jax.Array, RunState]:
    """Keys and initial run state of a population, in one program (one dispatch).
    ``rows``: the trials' ``(ids, hp, live)``, packed or not (``host_rows``)."""
    ids, hp, live = unrows(rows)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(ids)  # [P]
    tstate = _init_members(spec.trainable, keys, hp, n_folds)
    n = ids.shape[0]
    return keys, RunState(
        tstate=tstate,
        best=jax.tree.map(jnp.copy, keep_of(spec.trainable, tstate)),
        active=live,
        diverged=jnp.zeros(n, bool),
        stopped=jnp.zeros(n, bool),
        epochs_run=jnp.zeros(n, jnp.int32),
        best_value=jnp.full(n, -jnp.inf, jnp.float32),
        best_epoch=jnp.full(n, -1, jnp.int32),
        stop_state=spec.stopper.init(n) if spec.stopper is not None else None,
    )


def refill(
    spec: SegmentSpec,
    n_folds: int,
    seed: jax.Array,
    rows: Any,
    keys: jax.Array,
    run: RunState,
) -> tuple[jax.Array, RunState]:
    """Start new trials in the slots ``fill`` of ``rows`` = ``(ids, hp, fill)``
    (fresh keys, weights, optimizer and stopper state, counters); the other slots keep
    theirs, bit for bit."""
    ids, hp, fill = unrows(rows)
    new_keys, fresh = start(spec, n_folds, seed, (ids, hp, fill))
    # The same leaves in the running state's structure: a state whose static parts are
    # rebuilt by each trace of init (Flax's TrainState holds a bound apply_fn) would
    # otherwise not match it.
    fresh = jax.tree.unflatten(jax.tree.structure(run), jax.tree.leaves(fresh))
    keys = jax.vmap(lambda f, a, b: jax.lax.select(f, a, b))(fill, new_keys, keys)
    stop_state = (
        stopping.reset(spec.stopper, run.stop_state, fill, fresh.stop_state)
        if spec.stopper is not None
        else None
    )
    out = tree_where(
        fill, fresh._replace(stop_state=None), run._replace(stop_state=None)
    )
    return keys, out._replace(stop_state=stop_state)


@dataclass
class Programs:
    """The jitted programs of one spec: ``init(seed, rows)``, ``segment(run, hp,
    keys, data, n_epochs)``, ``refill(seed, rows, keys, run)``, ``gather(run, src)``
    (copy slots' states: PBT's exploit), and what was measured of them."""

    spec: SegmentSpec
    n_folds: int
    init: Any
    segment: Any
    refill: Any
    gather: Any
    # How each population size's segment results are packed (filled when traced).
    layouts: dict = field(default_factory=dict)
    # Bytes of run state per trial, by the hyperparameters' dtypes: kept with the
    # programs they were measured from, so they go when the programs go.
    state_bytes: dict = field(default_factory=dict)


_gather = jax.jit(lambda tree, src: jax.tree.map(lambda a: a[src], tree))


class ProgramCache:
    """Compiled programs by spec, the bucket shapes compiled so far (the planner
    counts no compile for them), and memory models measured from compiled programs."""

    def __init__(self) -> None:
        self.programs: dict[Hashable, Programs] = {}
        self.seen: set = set()
        self.memory: dict[Hashable, tuple[float, float]] = {}

    def get(self, spec: SegmentSpec, n_folds: int) -> Programs:
        key = (spec, n_folds)
        hit = self.programs.get(key)
        if hit is None:
            # Donating the run state lets XLA update it in place (not on the CPU).
            donate = () if spec.platform == "cpu" else (0,)
            options = dict(spec.program.compiler_options)
            extra = {"compiler_options": options} if options else {}
            layouts: dict = {}
            hit = Programs(
                spec=spec,
                n_folds=n_folds,
                init=jax.jit(functools.partial(start, spec, n_folds)),
                segment=jax.jit(
                    functools.partial(segment, spec, layouts),
                    donate_argnums=donate,
                    **extra,
                ),
                refill=jax.jit(functools.partial(refill, spec, n_folds)),
                gather=_gather,
                layouts=layouts,
            )
            self.programs[key] = hit
        return hit

    def clear(self) -> None:
        self.programs.clear()
        self.seen.clear()
        self.memory.clear()


#: The process's programs, shared by every sweep that is not given a cache of its own
#: (jit's caches are process-wide too).
DEFAULT_CACHE = ProgramCache()


class CompileClock:
    """Seconds JAX spent tracing and compiling, from its monitoring events (a
    process-wide listener: JAX reports compiles per process)."""

    _EVENTS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )
    seconds = 0.0

    @classmethod
    def _on_duration(cls, event: str, duration: float, **kwargs: Any) -> None:
        if event in cls._EVENTS:
            cls.seconds += duration


jax.monitoring.register_event_duration_secs_listener(CompileClock._on_duration)
