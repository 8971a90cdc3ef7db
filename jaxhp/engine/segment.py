"""The compiled segment: up to ``E`` epochs of a whole population, in one program.

Every trial's state carries leading axes ``[P, F]`` (population, folds). An epoch is a
counted loop (``fori_loop``) over ``S`` optimizer steps of ``Trainable.step``,
``vmap``-ed once over the ``M = P * F`` members (trial, fold), then the vmapped
``evaluate`` on each fold's validation rows, then the per-trial bookkeeping (best epoch,
divergence, the stopper). How each hyperparameter runs batched:

- numbers (learning rate, weight decay, dropout, ...) are per-trial traced arrays;
- batch size ``b`` is honoured exactly: each epoch a trial takes ``ceil(n/b)`` steps on
  batches of ``b`` rows of its own shuffle (the last one short), padded to the bucket's
  ``B`` rows with a row mask; a trial with fewer steps than the bucket's ``S`` idles;
- epochs are a per-trial budget; a trial past it, early-stopped or diverged is frozen by
  mask (``where(active, new, old)``): its state stays bit for bit, and a diverged trial
  keeps the state it reached in the epoch it blew up. A mask saves no FLOPs inside a
  running segment: compute is saved by ending a segment once every trial is inactive,
  and by refilling freed slots (:class:`~jaxhp.engine.Population`).

Trial ``i``'s randomness derives from ``fold_in(key(seed), trial_id)`` only, so its
result does not depend on the population size, its bucket-mates or the device count.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Hashable, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxhp.engine.data import FoldArrays, fold_data
from jaxhp.engine.options import ProgramOptions
from jaxhp.engine.shuffle import perm_from_bits, shuffle_bits
from jaxhp.engine.transfer import pack, unrows
from jaxhp.stopping import Report
from jaxhp.trainable import Batch, capabilities, tree_where

__all__ = [
    "RunState",
    "SegmentOut",
    "SegmentSpec",
    "TRACE_COUNTS",
    "keep_of",
    "segment",
]

#: How often each compiled segment was traced (tests assert no recompiles).
TRACE_COUNTS: Counter = Counter()


class RunState(NamedTuple):
    tstate: Any  # [P, F, ...] the Trainable's state
    best: Any  # [P, F, ...] what the Trainable keeps (``keep``) of its best epoch
    active: jax.Array  # [P] bool: still training
    diverged: jax.Array  # [P] bool
    stopped: jax.Array  # [P] bool: stopped early
    epochs_run: jax.Array  # [P] int32
    best_value: jax.Array  # [P] float32, oriented (higher is better)
    best_epoch: jax.Array  # [P] int32, -1 before the first epoch
    stop_state: Any  # the stopper's state


@dataclass(frozen=True)
class SegmentSpec:
    """Everything static about a bucket's compiled segment (the compile-cache key)."""

    trainable: Hashable
    metric: str
    sign: float  # +1 maximise, -1 minimise
    batch: int  # B, rows of the padded batch
    steps: int  # S, optimizer steps per epoch
    seg_epochs: int  # E, epochs per segment at most
    stopper: Hashable | None
    uniform_steps: bool = False  # every trial and fold takes exactly `steps` steps
    uniform_batch: bool = False  # every trial's batch size is `batch`
    eval_every: int = 1  # validate every this many epochs (and at each trial's last)
    program: ProgramOptions = ProgramOptions()  # the platform's choices it depends on
    static_epochs: bool = False  # a fixed-count epoch loop (options.static_epoch_loop)
    # Several devices, and a Trainable with a population_step: the population's mesh
    # (axis "pop"), over which that step runs under shard_map.
    mesh: Any = None

    @property
    def platform(self) -> str:
        return self.program.platform


class SegmentOut(NamedTuple):
    """A segment's results for the host: epochs done, per-epoch rows, per-trial flags."""

    done: Any  # epochs this segment ran
    bufs: Any  # {name: [E, P, ...]} per-epoch rows (NaN where a trial did not train)
    flags: Any  # (diverged, stopped, epochs_run, best_value, best_epoch), each [P]
    active: Any  # [P]
    best1: Any  # the best-epoch state when the population is one trial, else None


def flags_of(run: RunState) -> tuple:
    return (run.diverged, run.stopped, run.epochs_run, run.best_value, run.best_epoch)


def keep_of(trainable, state: Any) -> Any:
    """What the engine keeps of the best epoch of ``state`` (``[P, F, ...]``):
    ``trainable.keep`` of each member's state (for the built-in tasks the weights, not
    the optimizer state) when the Trainable defines it, else the whole state."""
    keep = capabilities(trainable).keep
    return state if keep is None else jax.vmap(jax.vmap(keep))(state)


def segment(
    spec: SegmentSpec,
    layouts: MutableMapping,
    run: RunState,
    hp: Any,
    keys: jax.Array,
    data: FoldArrays,
    n_epochs: jax.Array,
):
    """Train up to ``n_epochs`` (at most ``spec.seg_epochs``) epochs of the population
    ``run``; returns the new run state and the host's results packed into few vectors
    (their layout kept in ``layouts``: one transfer instead of one per leaf)."""
    TRACE_COUNTS[spec] += 1
    hp = unrows(hp)
    n_pop = keys.shape[0]
    steps_per_epoch = -(-data.n_train[None, :] // hp["batch_size"][:, None])  # [P, F]
    randomness = _randomness(spec, run, keys, data)
    epoch = functools.partial(_epoch, spec, hp, data, steps_per_epoch, *randomness)
    i, run, bufs = _run_epochs(spec, epoch, run, n_epochs)
    best1 = run.best if n_pop == 1 else None  # a lone trial's best state: cheap to take
    out = SegmentOut(i, bufs, flags_of(run), run.active, best1)
    n_folds = data.x_train.shape[0]
    return run, pack(layouts, (n_folds, n_pop), out)


def _randomness(spec: SegmentSpec, run: RunState, keys: jax.Array, data: FoldArrays):
    """The keys and shuffle words of the segment's epochs, drawn once before its epoch
    loop (one batch of hashes per segment rather than three per epoch). The key of
    member (p, f) in its epoch e is fold_in(member_key, e); its shuffle's words come
    from fold_in(that key, 0). A trial that trains in epoch i of the segment trains its
    epoch epochs_run + i (one that stops never resumes within a segment)."""
    n_rows = data.x_train.shape[1]
    fold_ids = jnp.arange(data.x_train.shape[0])
    member_keys = jax.vmap(
        lambda k: jax.vmap(lambda f: jax.random.fold_in(k, f))(fold_ids)
    )(keys)
    e_all = run.epochs_run[None, :] + jnp.arange(spec.seg_epochs)[:, None]  # [E, P]
    ekeys_all = jax.vmap(  # over the epochs, then the trials and the folds
        jax.vmap(lambda ks, ep: jax.vmap(lambda k: jax.random.fold_in(k, ep))(ks))
    )(jnp.broadcast_to(member_keys, (spec.seg_epochs, *member_keys.shape)), e_all)
    bits_all = jax.vmap(
        jax.vmap(jax.vmap(lambda k: shuffle_bits(jax.random.fold_in(k, 0), n_rows)))
    )(ekeys_all)  # [E, P, F, rounds, 2]
    return ekeys_all, bits_all


def _epoch(spec, hp, data, steps_per_epoch, ekeys_all, bits_all, i, run: RunState):
    """One epoch of every trial: train, validate where due, update the run state."""
    ran = run.active  # [P]
    # Each trial's own epoch index: its epochs trained so far (an active trial has
    # trained every epoch since it started, whenever its slot was filled).
    e = run.epochs_run  # [P]
    n_rows = data.x_train.shape[1]
    perms = jax.vmap(jax.vmap(lambda b, n: perm_from_bits(b, n, n_rows)), (0, None))(
        bits_all[i], data.n_train
    )  # [P, F, N]
    # Computed once per epoch and kept: not re-derived inside each consumer fusion.
    perms = jax.lax.optimization_barrier(perms)
    ts, loss_sum = _train(
        spec, hp, data, perms, ekeys_all[i], ran, steps_per_epoch, run
    )
    metrics, due = _validate(spec, hp, data, ts, ran, e)
    return _close_epoch(spec, hp, run, ts, loss_sum, steps_per_epoch, metrics, due)


class _EpochData(NamedTuple):
    """An epoch's training rows as the step sees them."""

    x: Any  # [M, span, ...] shuffled copies, or [F, N, ...] / [N, ...] shared rows
    y: Any
    n: Any  # [F] or [] real rows
    aux: Any
    fold_axis: int | None  # None: one fold, entered unmapped (see fold_data)
    shuffled: bool


def _epoch_rows(spec: SegmentSpec, data: FoldArrays, perms, n_pop: int) -> _EpochData:
    """The rows the steps read. When the shuffled copies fit the budget
    (``options.preshuffle_bytes``) each member's rows are copied in shuffle order once
    an epoch and a step slices its batch; otherwise it gathers the batch through the
    permutation. Same rows, same order, bit for bit."""
    n_folds, n_rows = data.x_train.shape[:2]
    train, fa = fold_data(n_folds, (data.x_train, data.y_train, data.n_train, data.aux))
    x_all, y_all, n_all, aux_all = train
    span = n_rows + spec.batch  # the last batch may run past the data: masked
    row_bytes = sum(
        math.prod(a.shape[2:]) * a.dtype.itemsize for a in (data.x_train, data.y_train)
    )
    shuffled = n_pop * n_folds * span * row_bytes <= spec.program.preshuffle_bytes
    if shuffled:
        ext = jnp.minimum(jnp.arange(span), n_rows - 1)
        rows_of = jax.vmap(
            jax.vmap(lambda p, x, y: (x[p[ext]], y[p[ext]]), (0, fa, fa)),
            (0, None, None),
        )
        x_all, y_all = rows_of(perms, x_all, y_all)  # [P, F, span, ...]
        x_all = x_all.reshape((n_pop * n_folds, *x_all.shape[2:]))
        y_all = y_all.reshape((n_pop * n_folds, *y_all.shape[2:]))
    return _EpochData(x_all, y_all, n_all, aux_all, fa, shuffled)


def _member_batch(spec: SegmentSpec, ed: _EpochData, perm, ekey, hpm, f, x, y, t):
    """Step ``t``'s batch of one member (fold ``f``): ``x``, ``y`` are its shuffled
    rows, or the shared rows that ``perm`` indexes."""

    def of_fold(a):  # fold-level arrays have a fold axis only with several folds
        return a if ed.fold_axis is None else a[f]

    n = of_fold(ed.n)
    aux = jax.tree.map(of_fold, ed.aux)
    # A static batch size when the bucket's trials share it (fewer ops per step).
    b = spec.batch if spec.uniform_batch else hpm["batch_size"]
    start = t * b
    idx = start + jnp.arange(spec.batch)
    rowmask = idx < n
    if not spec.uniform_batch:
        rowmask &= jnp.arange(spec.batch) < b
    if ed.shuffled:
        bx = jax.lax.dynamic_slice_in_dim(x, start, spec.batch)
        by = jax.lax.dynamic_slice_in_dim(y, start, spec.batch)
    else:
        rows = perm[jnp.minimum(idx, perm.shape[0] - 1)]  # perm: [N], every row
        bx, by = (
            (x[rows], y[rows]) if ed.fold_axis is None else (x[f, rows], y[f, rows])
        )
    # The real rows of this batch, counted by arithmetic (no reduction kernels).
    count = jnp.clip(n - start, 0, b).astype(jnp.int32)
    return Batch(bx, by, rowmask, jax.random.fold_in(ekey, t + 1), aux, count)


def _train(spec, hp, data, perms, ekeys, ran, steps_per_epoch, run: RunState):
    """The epoch's optimizer steps of every member: ``(states [P, F, ...], loss sums
    [P, F])``. The members (trial, fold) are flattened into one axis of ``M = P * F``:
    one vmap, so every batched matmul has a single batch dimension (under two vmaps
    XLA's GPU layouts kept a transpose per weight gradient)."""
    tr = spec.trainable
    loss_per_row = capabilities(tr).loss_per_row
    n_pop, n_folds = steps_per_epoch.shape
    n_mem = n_pop * n_folds
    ed = _epoch_rows(spec, data, perms, n_pop)

    def members(a):  # [P, F, ...] -> [M, ...]
        return a.reshape((n_mem, *a.shape[2:]))

    hp_m = jax.tree.map(lambda v: jnp.repeat(v, n_folds, axis=0), hp)  # [M]
    fold_m = jnp.tile(jnp.arange(n_folds), n_pop)  # member m trains fold m % F
    perms_m, ekeys_m, spe_m = members(perms), members(ekeys), members(steps_per_epoch)
    live_m = jnp.repeat(ran, n_folds, axis=0)  # [M]
    member_batch = functools.partial(_member_batch, spec, ed)
    xa = 0 if ed.shuffled else None  # shuffled copies are per member; data is shared

    def member_step(ts, perm, ekey, hpm, f, x, y, spe, live, t):
        new, metrics = tr.step(ts, member_batch(perm, ekey, hpm, f, x, y, t), hpm)
        # The step's loss, or its per-row terms (Trainable.loss_per_row): accumulated
        # as they come and summed once per epoch.
        loss = metrics["loss"]
        # Which members' state this step may change: the ones that train this epoch
        # (options.freeze_in_step), and which take this step (some trials take fewer
        # steps per epoch than the bucket: they idle).
        keep = live if spec.program.freeze_in_step else None
        if not spec.uniform_steps:
            keep = t < spe if keep is None else keep & (t < spe)
            loss = jnp.where(t < spe, loss, 0.0)
        if keep is not None:
            new = tree_where(keep, new, ts)
        # No per-step checks: a NaN/Inf loss makes the epoch's loss sum non-finite.
        return new, loss

    over_members = jax.vmap(member_step, in_axes=(0, 0, 0, 0, 0, xa, xa, 0, 0, None))
    step_all = _population_step(spec, hp_m, live_m)
    over_batches = jax.vmap(member_batch, in_axes=(0, 0, 0, 0, xa, xa, None))

    def train_step(t, carry):
        ts, loss_sum = carry
        if step_all is not None:
            batch = over_batches(perms_m, ekeys_m, hp_m, fold_m, ed.x, ed.y, t)
            ts, loss = step_all(ts, batch)
        else:
            ts, loss = over_members(
                ts, perms_m, ekeys_m, hp_m, fold_m, ed.x, ed.y, spe_m, live_m, t
            )
        if loss.shape != loss_sum.shape:
            want = f"[{spec.batch}] (per row)" if loss_per_row else "a scalar"
            raise TypeError(
                f"{type(tr).__name__}.step returned a loss of shape "
                f"{loss.shape[1:]}; expected {want} (see Trainable.loss_per_row)"
            )
        return ts, loss_sum + loss

    loss_shape = (n_mem, spec.batch) if loss_per_row else (n_mem,)
    # A counted loop, not a scan over arange(steps): the step index is the loop's own
    # counter, not a slice of an array (on a GPU one kernel fewer per step).
    ts, loss_sum = jax.lax.fori_loop(
        0,
        spec.steps,
        train_step,
        (jax.tree.map(members, run.tstate), jnp.zeros(loss_shape, jnp.float32)),
    )
    ts = jax.tree.map(lambda a: a.reshape((n_pop, n_folds, *a.shape[1:])), ts)
    return ts, jnp.sum(loss_sum.reshape(n_pop, n_folds, -1), axis=2)


def _population_step(spec: SegmentSpec, hp_m, live_m):
    """The Trainable's step of all members at once (``population_step``), or None.
    The engine builds the batches, and the step leaves a member as it is where
    ``live`` is off or its batch is empty. It is made outside the step loop, so what it
    derives from ``hp`` is computed once an epoch. Over several devices each runs its
    own members (shard_map): a custom kernel is opaque to XLA's partitioner, which
    would gather them all."""
    population_step = capabilities(spec.trainable).population_step
    if population_step is None:
        return None
    args, step = population_step(hp_m, live_m, platform=spec.platform)
    if spec.mesh is not None:
        step = shard_members(step, spec.mesh, len(args))
    return lambda ts, batch: step(*args, ts, batch)


def shard_members(step, mesh: Any, n_args: int):
    """``step(*args, states, batch)`` run by each device of ``mesh`` on its own
    members: every array leads with the member axis, split over the axis "pop"."""
    from jax.sharding import PartitionSpec

    spec = PartitionSpec("pop")
    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:  # older JAX releases
        from jax.experimental.shard_map import shard_map

        check = {"check_rep": False}
    else:
        check = {"check_vma": False}
    # No replication checks: a custom kernel has no rule for them.
    return shard_map(
        step, mesh=mesh, in_specs=(spec,) * (n_args + 2), out_specs=spec, **check
    )


def _validate(spec: SegmentSpec, hp, data: FoldArrays, ts, ran, e):
    """Validation metrics ``{name: [P, F]}`` and which trials were due: every epoch, or
    every ``eval_every`` epochs and at a trial's last (run for the whole population
    only when some trial is due)."""
    tr = spec.trainable
    n_folds = data.x_train.shape[0]
    eval_key = jax.random.key(0)

    def member_eval(ts, hpm, x, y, mask, aux):
        return tr.evaluate(ts, Batch(x, y, mask, eval_key, aux), hpm)

    val, fa = fold_data(n_folds, (data.x_val, data.y_val, data.val_mask, data.aux))

    def validate():  # {name: [P, F]}
        return jax.vmap(
            jax.vmap(member_eval, in_axes=(0, None, fa, fa, fa, fa)),
            in_axes=(0, 0, None, None, None, None),
        )(ts, hp, *val)

    if spec.eval_every == 1:
        return validate(), ran
    due = ran & (((e + 1) % spec.eval_every == 0) | (e + 1 >= hp["epochs"]))
    skipped = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(validate)
    )
    return jax.lax.cond(jnp.any(due), validate, lambda: skipped), due


def _close_epoch(spec, hp, run: RunState, ts, loss_sum, steps_per_epoch, metrics, due):
    """The run state after an epoch (best epoch, divergence, the stopper's verdict,
    who trains on) and the epoch's row of curves."""
    ran, e = run.active, run.epochs_run
    nan = jnp.float32(jnp.nan)
    per_fold = jnp.where(due[:, None], metrics[spec.metric].astype(jnp.float32), nan)
    value = jnp.mean(per_fold, axis=1)  # [P]
    oriented = spec.sign * value
    blew_up = ~jnp.all(jnp.isfinite(loss_sum), axis=1) | (due & ~jnp.isfinite(value))
    ok = ran & ~blew_up
    # Trials that did not train this epoch keep their state from its start, bit for
    # bit: frozen in every step (options.freeze_in_step) or put back here. A plain
    # select, not a `cond` that skips it when every trial trained: a branch costs more
    # than the select, and on a GPU each branch reads its predicate back to the host.
    # A trial that blew up this epoch keeps the state it reached (it trains no more,
    # and its best-epoch weights come from finite epochs only).
    if not spec.program.freeze_in_step:
        ts = tree_where(ran, ts, run.tstate)
    improved = ok & due & (oriented > run.best_value)
    if spec.stopper is not None:
        report = Report(oriented, value, ok & due, e)
        stop_state, stop = spec.stopper.update(run.stop_state, report)
        stop = stop & ok
    else:
        stop_state, stop = run.stop_state, jnp.zeros_like(ok)
    new_run = RunState(
        tstate=ts,
        best=tree_where(improved, keep_of(spec.trainable, ts), run.best),
        active=ran & ~blew_up & ~stop & (e + 1 < hp["epochs"]),
        diverged=run.diverged | (ran & blew_up),
        stopped=run.stopped | stop,
        epochs_run=run.epochs_run + ok.astype(jnp.int32),
        best_value=jnp.where(improved, oriented, run.best_value),
        best_epoch=jnp.where(improved, e, run.best_epoch),
        stop_state=stop_state,
    )
    train_loss = jnp.mean(loss_sum / steps_per_epoch, axis=1)
    row = {
        "train_loss": jnp.where(ran, train_loss, nan),
        "value": jnp.where(due, value, nan),
        "value_folds": jnp.where(due[:, None], per_fold, nan),
        **{
            k: jnp.where(due, jnp.mean(v, 1).astype(jnp.float32), nan)
            for k, v in metrics.items()
            if k != spec.metric
        },
    }
    return new_run, row


def _run_epochs(spec: SegmentSpec, epoch, run: RunState, n_epochs):
    """Up to ``n_epochs`` epochs: ``(epochs done, run state, {name: [E, P, ...]})``."""
    row_shapes = jax.eval_shape(lambda r: epoch(0, r)[1], run)
    bufs = jax.tree.map(
        lambda s: jnp.full((spec.seg_epochs, *s.shape), jnp.nan, s.dtype), row_shapes
    )

    def body(i, r, b):
        r, row = epoch(i, r)
        return r, jax.tree.map(lambda buf, x: buf.at[i].set(x), b, row)

    if spec.static_epochs:
        # Exactly seg_epochs epochs (a static trip count): an accelerator runs it
        # without reading a condition back after every epoch. Only full segments run
        # it (a short one takes the while loop's program). Epochs after every trial
        # went inactive are exact no-ops (no stopper here, and a trial that did not
        # train keeps its state bit for bit) that cost their steps' time. `done`
        # counts the epochs some trial trained.
        def body_static(i, c):
            done, r, b = c
            live = jnp.any(r.active)
            r, b = body(i, r, b)
            return done + live.astype(jnp.int32), r, b

        return jax.lax.fori_loop(
            0, spec.seg_epochs, body_static, (jnp.int32(0), run, bufs)
        )

    def cond(c):
        i, r, _ = c
        return (i < n_epochs) & jnp.any(r.active)

    def body_while(c):
        i, r, b = c
        r, b = body(i, r, b)
        return i + 1, r, b

    return jax.lax.while_loop(cond, body_while, (jnp.int32(0), run, bufs))
