"""How many trials of a bucket train at once: memory budgets and CPU cache chunks.

A bucket too large for a ``memory_budget`` trains in chunks sized from the compiled
segment's memory analysis. On a CPU a bucket also trains in chunks whose run state
fits the caches (``EngineOptions.cpu_chunk_bytes_per_core``): one large vmapped
population streams every trial's weights through memory at every step, while a chunk's
stay in cache (``benchmarks/RESULTS.md`` has the measured speed-ups). Chunks run one
after another through the same program, so results do not change.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import jax
import numpy as np

from jaxhp.engine.programs import ProgramCache, Programs
from jaxhp.engine.transfer import host_rows

__all__ = ["chunk_size", "cpu_chunk"]


def init_shapes(
    comp: Programs, gsub: Mapping[str, np.ndarray], seed: int, p: int, pack: bool = True
):
    """A population of ``p`` of the bucket's hyperparameters as shapes, and the shapes
    of the initial-state program's (keys, run state) for it: traced, not run."""
    hp_p = {k: jax.ShapeDtypeStruct((p,), v.dtype) for k, v in gsub.items()}
    ids = jax.ShapeDtypeStruct((p,), np.uint32)
    live = jax.ShapeDtypeStruct((p,), np.bool_)
    rows = host_rows((ids, hp_p, live), pack)
    keys, run = jax.eval_shape(comp.init, np.uint32(seed % 2**32), rows)
    return hp_p, keys, run


def pow2_floor(x: float) -> int:
    """The largest power of two not above ``x`` (1 below 2)."""
    return 2 ** int(math.log2(max(x, 1.0)))


def memory_model(
    cache: ProgramCache, comp: Programs, gsub, data, seed, pack: bool = True
) -> tuple:
    """(fixed bytes, bytes per trial) of a bucket's segment, from the compiled program's
    memory analysis at two small populations (arguments + outputs + temporaries)."""
    spec = comp.spec
    dtypes = tuple((k, v.dtype.str) for k, v in gsub.items())
    key = (spec, dtypes, data.x_train.shape, pack)
    if key not in cache.memory:
        sizes = []
        for p in (8, 16):
            hp_p, keys, run = init_shapes(comp, gsub, seed, p, pack)
            rows = host_rows(hp_p, pack)
            m = (
                comp.segment.lower(run, rows, keys, data, np.int32(1))
                .compile()
                .memory_analysis()
            )
            sizes.append(
                m.argument_size_in_bytes
                + m.output_size_in_bytes
                + m.temp_size_in_bytes
                - m.alias_size_in_bytes
            )
        per_trial = max((sizes[1] - sizes[0]) / 8.0, 1.0)
        cache.memory[key] = (max(sizes[0] - 8 * per_trial, 0.0), per_trial)
    return cache.memory[key]


def state_bytes(comp: Programs, gsub: Mapping[str, np.ndarray], seed: int) -> float:
    """Bytes of run state per trial, from the initial-state program's output shapes
    (traced, not compiled; remembered by the programs they describe)."""
    key = tuple((k, v.dtype.str) for k, v in gsub.items())
    if key not in comp.state_bytes:
        p = 8
        _, _, run = init_shapes(comp, gsub, seed, p)
        leaves = jax.tree.leaves(run)
        comp.state_bytes[key] = sum(a.size * a.dtype.itemsize for a in leaves) / p
    return comp.state_bytes[key]


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_chunk(per_trial_bytes: float, options, n_dev: int, n_folds: int) -> int:
    """Trials per chunk on a CPU (``cpu_chunk_bytes_per_core``, ``cpu_min_members``):
    a power of two per device."""
    budget = max(usable_cores(), 2) * options.cpu_chunk_bytes_per_core
    least = pow2_floor(options.cpu_min_members / n_folds)
    return n_dev * max(least, pow2_floor(budget / per_trial_bytes / n_dev))


def chunk_size(
    cache, comp: Programs, gsub, data, seed, budget: int, n_dev: int, pack: bool = True
) -> int:
    """The most trials (a power of two) whose segment fits ``budget`` bytes per device."""
    fixed, per_trial = memory_model(cache, comp, gsub, data, seed, pack)
    fit = int((budget - fixed) // per_trial) * n_dev
    if fit < 1:
        raise MemoryError(
            f"memory_budget={budget} bytes cannot hold even one trial of bucket "
            f"{comp.spec.trainable} (about {fixed:.3g} bytes fixed + "
            f"{per_trial:.3g} per trial)"
        )
    n = len(next(iter(gsub.values())))
    return n if fit >= n else max(n_dev, pow2_floor(fit))


def chunk_for(
    cache,
    comp: Programs,
    gsub,
    data,
    *,
    seed,
    memory_budget,
    n_dev,
    per_trial_stopper,
    options,
) -> int:
    """Trials per chunk of a bucket: all of them, unless a memory budget or (on one
    CPU process, under a per-trial stopper) the caches call for fewer. Not across
    processes (each must pick the same chunks, and the rule reads this host's cores),
    nor under a stopper that compares a population's trials: a chunk would be its
    comparison set."""
    n = len(next(iter(gsub.values())))
    chunk = (
        n
        if memory_budget is None
        else chunk_size(
            cache, comp, gsub, data, seed, memory_budget, n_dev, options.pack_host_rows
        )
    )
    if (
        options.cpu_chunk_bytes_per_core is not None
        and chunk > n_dev
        and jax.process_count() == 1
        and per_trial_stopper
    ):
        per_trial = state_bytes(comp, gsub, seed)
        chunk = min(chunk, cpu_chunk(per_trial, options, n_dev, comp.n_folds))
    return chunk
