"""Bucket planning: which trials of a round share one compiled program.

Trials whose shapes differ (width, depth, batch size) can run in one program only padded
to the largest; every extra program costs a compile. The planner starts from one bucket
per power-of-two shape and merges buckets while the cost model says a compile saved
outweighs the padding added (``CostModel``, per platform in ``EngineOptions``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import numpy as np

from jaxhp.engine.options import EngineOptions
from jaxhp.engine.segment import SegmentSpec
from jaxhp.tasks.base import Task, next_pow2, next_pow2_array
from jaxhp.tasks.check import TrainableError

__all__ = ["BucketShape", "bucket_spec", "group_by", "plan_buckets", "pop_size"]

_UNSHARED = (
    "trials with different static hyperparameters cannot share one compiled program "
    "unless the task says how to pad them (TrainableTask(..., pad=...)); use "
    "bucketing='auto' or 'pow2', or pass pad="
)


class BucketShape(NamedTuple):
    trainable: Hashable
    batch: int  # B
    steps: int  # S
    key: tuple  # (trainable, B, S)


def bucket_shape(task: Task, hp: Mapping[str, np.ndarray], n_rows: int) -> BucketShape:
    trainable = task.trainable(hp)
    batch = next_pow2(int(np.max(hp["batch_size"])))
    steps = quantize_steps(-(-n_rows // int(np.min(hp["batch_size"]))))
    return BucketShape(trainable, batch, steps, (trainable, batch, steps))


def bucket_spec(
    task: Task,
    hp: Mapping[str, np.ndarray],
    segment_epochs: int,
    stopper: Any,
    options: EngineOptions,
    eval_every: int = 1,
) -> tuple[BucketShape, SegmentSpec]:
    """The shape and compiled-segment spec of a bucket holding the trials ``hp``."""
    shape = bucket_shape(task, hp, int(task.data.n_train.max()))
    steps = -(-task.data.n_train[None, :] // hp["batch_size"][:, None])
    spec = SegmentSpec(
        trainable=shape.trainable,
        metric=task.metric,
        sign=1.0 if task.direction == "maximize" else -1.0,
        batch=shape.batch,
        steps=shape.steps,
        seg_epochs=segment_epochs,
        stopper=stopper,
        uniform_steps=bool(np.all(steps == shape.steps)),
        uniform_batch=bool(np.all(hp["batch_size"] == shape.batch)),
        eval_every=eval_every,
        program=options.program,
        static_epochs=stopper is None and options.static_epoch_loop,
    )
    return shape, spec


def quantize_steps(s: int) -> int:
    """Round a step count up to 1/32-octave steps (at most ~3% idle steps), so that varied
    batch sizes share programs; counts up to 64 are kept exact."""
    if s <= 64:
        return s
    q = 1 << (int(math.log2(s)) - 5)
    return -(-s // q) * q


def pop_size(size: int, n_dev: int) -> int:
    """Padded population: a power of two, and a multiple of the device count."""
    p = next_pow2(size)
    return p if n_dev <= 1 else -(-max(p, n_dev) // n_dev) * n_dev


def bucket_cost(
    task: Task,
    hp: Mapping[str, np.ndarray],
    idx: np.ndarray,
    n_rows: int,
    n_folds: int,
    options: EngineOptions,
    seen: Any,
) -> float:
    """Estimated seconds to compile (unless in ``seen``, the shapes compiled) and run
    the trials ``idx`` as one bucket."""
    c = options.cost
    sub = {k: np.asarray(v)[idx] for k, v in hp.items()}
    shape = bucket_shape(task, sub, n_rows)
    padded = next_pow2(len(idx))
    epochs = int(sub["epochs"].max())
    flops_row = task.flops_per_row(shape.trainable)
    steps = shape.steps * epochs
    run = steps * (c.step_s + padded * n_folds * shape.batch * flops_row / c.flops)
    compiled = shape.key + (padded,) in seen
    return run + (0.0 if compiled else c.compile_s)


def group_by(keys: Any, batch: np.ndarray) -> dict[tuple, np.ndarray]:
    """The trials of each (shape key, batch bucket), in order. Integer keys are grouped
    by NumPy (a Python loop costs about a microsecond per trial); other hashables, one
    trial at a time."""
    if len(batch) == 0:
        return {}
    if isinstance(keys, np.ndarray) and keys.ndim == 1 and keys.dtype.kind in "iu":
        uk, ki = np.unique(keys, return_inverse=True)
        ub, bi = np.unique(batch, return_inverse=True)
        code = ki.reshape(-1) * len(ub) + bi.reshape(-1)  # one integer per pair
        used, inv = np.unique(code, return_inverse=True)
        inv = inv.reshape(-1)
        order = np.argsort(inv, kind="stable")  # trials ascending within a group
        parts = np.split(order, np.cumsum(np.bincount(inv))[:-1])
        pairs = zip(
            uk[used // len(ub)].tolist(), ub[used % len(ub)].tolist(), strict=True
        )
        return dict(zip(pairs, parts, strict=True))
    lists: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        lists.setdefault((k, int(batch[i])), []).append(i)
    return {k: np.asarray(v) for k, v in lists.items()}


def plan_buckets(
    task: Task,
    hp: Mapping[str, np.ndarray],
    *,
    bucketing: str,
    n_rows: int,
    options: EngineOptions | None = None,
    seen: Any = frozenset(),
) -> list[np.ndarray]:
    """Group a round's trials into buckets, each trained by one compiled program.

    - ``"none"``: one bucket; everything padded to the largest shape.
    - ``"pow2"``: one bucket per power-of-two width (the task's shape key) and batch size.
    - ``"auto"``: start from ``"pow2"`` and greedily merge the pair of buckets whose merge
      lowers the estimated time the most (a compile saved against padding added), until
      no merge helps. Shapes in ``seen`` (already compiled) cost no compile. Small
      populations on a CPU end up in few buckets, large ones on a GPU in many.

    Under a stopper that compares a bucket's trials with each other, the buckets are
    the comparison sets: pass no ``seen`` there, so that the plan is a function of ``hp``
    alone and a study resumed in a fresh process stops what an uninterrupted one does.
    """
    options = options or EngineOptions()
    n = len(hp["batch_size"])
    if bucketing == "none":
        if not task.can_share(hp):
            raise TrainableError(_UNSHARED)
        return [np.arange(n)]
    groups = group_by(task.shape_keys(hp), next_pow2_array(hp["batch_size"]))
    out = [groups[k] for k in sorted(groups, key=repr)]
    if bucketing == "pow2" or len(out) == 1:
        return out
    n_folds = task.data.n_folds

    def cost(g):
        return bucket_cost(task, hp, g, n_rows, n_folds, options, seen)

    costs = [cost(g) for g in out]
    while len(out) > 1:
        best_gain, best_pair = 0.0, None
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                merged = np.sort(np.concatenate([out[i], out[j]]))
                if not task.can_share(
                    {k: np.asarray(v)[merged] for k, v in hp.items()}
                ):
                    continue  # configurations the model cannot pad into one
                gain = costs[i] + costs[j] - cost(merged)
                if gain > best_gain:
                    best_gain, best_pair = gain, (i, j, merged)
        if best_pair is None:
            break
        i, j, merged = best_pair
        out = [g for k, g in enumerate(out) if k not in (i, j)] + [merged]
        costs = [c for k, c in enumerate(costs) if k not in (i, j)] + [cost(merged)]
    return sorted(out, key=lambda g: int(g[0]))
