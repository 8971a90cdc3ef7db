"""The population engine: many trials trained in lockstep as one compiled program.

Every trial's state carries leading axes ``[P, F]`` (population, folds). One *segment* is a
compiled program: a loop over up to ``segment_epochs`` epochs (a ``lax.while_loop`` that
ends once every trial is inactive; a fixed count on accelerators when no stopper can end
trials early, ``STATIC_EPOCH_LOOP``), each a counted loop (``fori_loop``) over ``S``
optimizer steps of ``Trainable.step`` ``vmap``-ed once over the ``P * F`` members (trial,
fold), followed by the vmapped ``evaluate`` on each fold's validation rows (every epoch,
or every ``eval_every`` epochs and at each trial's last). What the host
reads after a segment comes back packed into one vector (one transfer), and what a
program call takes from the host (hyperparameters, trial ids, masks) goes packed into one
matrix (``HostRows``).

How each hyperparameter runs batched:

- numbers (learning rate, weight decay, dropout, ...) are per-trial traced arrays;
- batch size ``b`` is honoured exactly: each epoch a trial takes ``ceil(n/b)`` steps on
  batches of ``b`` rows of its own shuffle (the last one short; the shuffle needs no
  sort, and on accelerators the shuffled rows are copied once per epoch while the
  copies fit ``PRESHUFFLE_BYTES``, so a step slices its batch instead of gathering it),
  padded to the bucket's ``B`` rows with a row mask; a trial with fewer steps than the bucket's ``S`` idles;
- epochs are a per-trial budget; a trial past it, early-stopped or diverged is frozen by
  mask (``where(active, new, old)``, in every step on accelerators and at each epoch's
  end on a CPU, ``FREEZE_IN_STEP``: its state stays bit for bit; a diverged trial keeps
  the state it reached in the epoch it blew up);
- depth and width are padded by the task to its bucket's maximum (for the MLP, unused
  units stay exactly zero and unused layers are identities).

Trials are grouped into *buckets* of similar shape (power-of-two width and batch size);
each bucket's population is padded to a power of two, so a program compiles once per
bucket shape and population size and later rounds reuse it. A bucket's segment stops as
soon as all of its trials are inactive, so early stopping saves real time once a whole
bucket has stopped; a mask alone saves no FLOPs inside a running segment. A bucket too
large for a ``memory_budget``, or on a CPU for the caches (``CPU_CHUNK_BYTES_PER_CORE``),
trains in chunks of trials, one after another through the same program.

Trial ``i``'s randomness derives from ``fold_in(key(seed), trial_id)`` only, so its result
does not depend on the population size, its bucket-mates or the number of rounds.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxhp import stopping
from jaxhp.bits import mix32
from jaxhp.stopping import Report
from jaxhp.tasks.base import Task, next_pow2, next_pow2_array
from jaxhp.trainable import Batch, tree_where

__all__ = [
    "BucketReport",
    "Outcomes",
    "TrialOutcome",
    "run_population",
    "TRACE_COUNTS",
]

#: How often each compiled program was traced (tests assert no recompiles).
TRACE_COUNTS: Counter = Counter()

#: Names a round's host phases in a profile (``jax.profiler.trace``): ``jaxhp.plan``,
#: ``.hp_to_device``, ``.init``, ``.segment``, ``.fetch``, ``.outcomes``
#: (benchmarks/gpu_profile.py sums them). About a microsecond each when not tracing.
_phase = jax.profiler.TraceAnnotation


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


class FoldArrays(NamedTuple):
    x_train: jax.Array  # [F, N, ...]
    y_train: jax.Array  # [F, N, ...]
    n_train: jax.Array  # [F]
    x_val: jax.Array  # [F, V, ...]
    y_val: jax.Array  # [F, V, ...]
    val_mask: jax.Array  # [F, V]
    aux: Any  # [F, ...] or None


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
    platform: str = "cpu"  # the platform of the devices it runs on ("cpu", "gpu", ...)
    static_epochs: bool = False  # a fixed-count epoch loop (see STATIC_EPOCH_LOOP)
    # Several devices, and a Trainable with a population_step: the population's mesh
    # (axis "pop"), over which that step runs under shard_map.
    mesh: Any = None


#: Bytes the per-epoch shuffled copies of the training data may take (all trials and
#: folds of a bucket) before the engine gathers each batch through the permutation
#: instead, per backend. Both give the same batches bit for bit. On an accelerator the
#: copies save kernels per step (a step slices its batch). On a CPU they cost time:
#: XLA's CPU gather copies element by element either way, and the slice is one more
#: copy per step, so a CPU gathers each batch (the engine over the hand-written
#: ``vmap_val``, copies against gathers: 0.97x against 0.995x at P = 1, 1.06x against
#: 1.12x at P = 64; benchmarks/RESULTS.md).
PRESHUFFLE_BYTES = {"cpu": 0, "default": 256 * 2**20}

#: Per backend: whether a segment without a stopper runs its epochs as a loop of a fixed
#: count (``SegmentSpec.static_epochs``) rather than a ``while_loop`` that ends as soon as
#: every trial is inactive. On a GPU the while loop's condition is read back to the host
#: after every epoch, so the segment's call holds the host until the device is done; a
#: fixed count lets the host queue the whole segment and return. Without a stopper
#: nothing ends a bucket early but its trials' epoch budgets (which bound the segment
#: anyway) or all of them diverging. A segment shorter than ``segment_epochs`` (a
#: bucket's last, or its only one) runs the while loop's program, which stops at its
#: own count instead of masking the epochs it lacks. On an H200 the fixed count ran
#: 1.00-1.03x the while loop (P = 1 to 4096, benchmarks/round_overhead.py); on a CPU
#: there is nothing to gain.
STATIC_EPOCH_LOOP = {"cpu": False, "default": True}

#: Per backend: how a trial that is not training this epoch (finished its epochs, stopped,
#: diverged) is kept as it is while the rest of its bucket trains. True: in every step,
#: ``where(live, new, old)`` on the step's new state, which XLA fuses into the optimizer
#: update's own kernel (it reads the old state anyway). False: it trains along and is put
#: back at the epoch's end, which keeps the epoch's starting state alive through the step
#: loop (a copy of the whole state per epoch) and selects all of it. Same trials either
#: way, bit for bit (a test runs both). On the H200's HLO (``benchmarks/hlo_diff.py
#: --target h200``, compiled without a device) the per-step freeze leaves the step loop's
#: kernels as they are and takes the epoch from 49 kernels to 33 at P = 1024 (16 state
#: copies gone); on the CPU's HLO the select does not fuse and the step loop grows from 51
#: to 60 launches (benchmarks/RESULTS.md).
FREEZE_IN_STEP = {"cpu": False, "default": True}

#: Whether a round's hyperparameters go to the device in one ``device_put``, shared by
#: the initial-state program and every segment (True), or as NumPy arrays that each
#: program call takes as they are (False; packed into one matrix, ``PACK_HOST_ROWS``).
#: The call's own transfer is cheaper than a ``device_put`` of the dict: 1.08x the
#: engine's trials/s at P = 1 on an H200, the same at P = 1024 and 4096
#: (benchmarks/round_overhead.py, before the packing), and faster on a CPU. A
#: population sharded over several devices is always put, with its sharding.
HP_DEVICE_PUT = False

#: Extra XLA compiler options for the segment program, per platform (``{}``: XLA's
#: defaults). An experiment for small populations on a GPU, where a round is bound by
#: launching ~50 kernels per optimizer step (~2 us each from the host): recording the
#: step loop as a CUDA graph, ``{"gpu": {"xla_gpu_enable_command_buffer": "FUSION,
#: CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"}}``, launches it once.
#: benchmarks/round_overhead.py measures it as its ``engine_graphs`` arm; unmeasured on a
#: GPU so far, so off.
SEGMENT_COMPILER_OPTIONS: dict[str, dict[str, str]] = {}

#: Whether a program call's per-trial host arrays (the hyperparameters, trial ids and
#: masks, each ``[P]``) travel packed as the columns of one ``uint32`` matrix
#: (:class:`HostRows`): one host-to-device transfer per call instead of one per leaf, a
#: dozen for the initial-state program and ten for each segment of the built-in MLP.
#: On an H200 a ``device_put`` of the ten hyperparameters took 1.9 ms of a 12 ms round
#: at P = 1 (benchmarks/RESULTS.md, third lease): the transfers' count, not their
#: bytes, is the cost. Bit casts, so the programs see the same values bit for bit.
PACK_HOST_ROWS = True


@jax.tree_util.register_pytree_node_class
class HostRows:
    """A pytree of per-trial arrays (``[P, ...]``, 32-bit or boolean) packed as the
    columns of one ``uint32`` matrix ``words`` (``[P, C]``; float and integer leaves
    bit cast, booleans as 0/1). The layout is the pytree's static aux data, so it keys
    a program's compile cache as the shapes do. :func:`host_rows` packs on the host;
    :func:`unrows` undoes it inside a program (slices and bit casts that XLA fuses into
    their consumers)."""

    def __init__(self, words: Any, layout: tuple):
        self.words = words
        # (treedef, ((dtype name, first column, trailing shape), ...))
        self.layout = layout

    def tree_flatten(self):
        return (self.words,), self.layout

    @classmethod
    def tree_unflatten(cls, layout, children):
        return cls(children[0], layout)


def _fits_word(dtype: Any) -> bool:
    """Whether a dtype's values travel as ``uint32`` words (bit casts, or booleans as
    0/1): the rule of both packings, :func:`host_rows` in and :func:`_pack` out."""
    dt = np.dtype(dtype)
    return dt == np.bool_ or (dt.itemsize == 4 and dt.kind in "fiu")


def _packable(leaf: Any, p: int) -> bool:
    if not isinstance(leaf, (np.ndarray, jax.ShapeDtypeStruct)):
        return False  # a device array stays where it is
    return len(leaf.shape) >= 1 and leaf.shape[0] == p and _fits_word(leaf.dtype)


def host_rows(tree: Any) -> Any:
    """``tree`` (NumPy arrays or shapes, each ``[P, ...]``) as :class:`HostRows`, or
    ``tree`` itself when it cannot be packed (a device array, another dtype) or
    ``PACK_HOST_ROWS`` is off: the programs take either form."""
    leaves, treedef = jax.tree.flatten(tree)
    if not PACK_HOST_ROWS or not leaves:
        return tree
    p = (getattr(leaves[0], "shape", None) or (-1,))[0]
    if not all(_packable(leaf, p) for leaf in leaves):
        return tree
    cols, c = [], 0
    for leaf in leaves:
        cols.append((np.dtype(leaf.dtype).name, c, tuple(leaf.shape[1:])))
        c += math.prod(leaf.shape[1:])
    layout = (treedef, tuple(cols))
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves):
        return HostRows(jax.ShapeDtypeStruct((p, c), np.uint32), layout)
    words = np.empty((p, c), np.uint32)
    for leaf, (dt, c0, _) in zip(leaves, cols, strict=True):
        flat = np.ascontiguousarray(leaf).reshape(p, -1)
        n = flat.shape[1]
        words[:, c0 : c0 + n] = (
            flat.astype(np.uint32) if dt == "bool" else flat.view(np.uint32)
        )
    return HostRows(words, layout)


def unrows(x: Any) -> Any:
    """The pytree that :func:`host_rows` packed (in a program), or ``x`` unpacked."""
    if not isinstance(x, HostRows):
        return x
    treedef, cols = x.layout
    p = x.words.shape[0]
    leaves = []
    for dt, c0, trail in cols:
        w = x.words[:, c0 : c0 + math.prod(trail)].reshape((p, *trail))
        leaves.append(
            w != 0 if dt == "bool" else jax.lax.bitcast_convert_type(w, np.dtype(dt))
        )
    return jax.tree.unflatten(treedef, leaves)


def _fold_data(n_folds: int, arrays: tuple) -> tuple[tuple, int | None]:
    """Per-fold data arrays and the fold vmap's axis for them. With one fold the data
    enters unmapped, so batch gathers index a plain ``[N, ...]`` array (one gather kernel
    fewer per step than through a mapped fold axis of size one)."""
    if n_folds > 1:
        return arrays, 0
    return jax.tree.map(lambda v: v[0], arrays), None


def shuffle_rounds(size: int) -> int:
    """Rounds of :func:`_member_perm`'s swap-or-not shuffle for ``size`` rows."""
    return max(24, 2 * math.ceil(math.log2(max(size, 2))) + 8)


def _shuffle_bits(key: jax.Array, size: int) -> jax.Array:
    """The random words :func:`_perm_from_bits` draws for a shuffle of ``size`` rows."""
    return jax.random.bits(key, (shuffle_rounds(size), 2), jnp.uint32)


def _member_perm(key: jax.Array, n: jax.Array, size: int) -> jax.Array:
    """A shuffle of ``range(size)`` whose first ``n`` entries are the real rows (in a
    random order) and the rest the padding rows, in place (see :func:`_perm_from_bits`).
    """
    return _perm_from_bits(_shuffle_bits(key, size), n, size)


def _perm_from_bits(bits: jax.Array, n: jax.Array, size: int) -> jax.Array:
    """:func:`_member_perm` from its random words (``_shuffle_bits``), which the engine
    draws for a whole segment's epochs at once.

    A swap-or-not shuffle (Hoang, Morris and Rogaway, 2012): each round draws ``k`` in
    ``[0, n)`` and a hash bit per pair ``{x, (k - x) mod n}``, and swaps the pairs whose
    bit is set. Every round is an involution of ``[0, n)``, so the result is a
    permutation for any (traced) ``n``, with no sort and no data-dependent loop: a fixed
    number of elementwise rounds that XLA fuses. On the 2-core CPU it takes ~50 us for
    1437 rows (30 rounds), where ``argsort`` of random keys (what
    ``jax.random.permutation`` does) takes ~290 us, ~10% of a lone trial's epoch
    (benchmarks/RESULTS.md). With :func:`shuffle_rounds` rounds the orderings of 3 and
    5 rows come out uniform (chi-squared, ``tests/test_engine.py``).
    """
    rounds = bits.shape[0]
    x = jnp.arange(size, dtype=jnp.uint32)
    n = jnp.asarray(n).astype(jnp.uint32)
    ks = bits[:, 0] % n  # each round's k, computed once (not per row)
    real = x < n
    for r in range(rounds):
        k = ks[r]
        partner = jnp.where(x <= k, k - x, k + n - x)  # (k - x) mod n, for x < n
        flip = (mix32(jnp.maximum(x, partner) ^ bits[r, 1]) & 1) == 1
        x = jnp.where(real & flip, partner, x)
    return x.astype(jnp.int32)


def _segment(
    spec: SegmentSpec,
    run: RunState,
    hp: dict,
    keys: jax.Array,
    data: FoldArrays,
    n_epochs: jax.Array,
):
    TRACE_COUNTS[spec] += 1
    hp = unrows(hp)
    tr = spec.trainable
    loss_per_row = getattr(tr, "loss_per_row", False)
    freeze_in_step = FREEZE_IN_STEP.get(spec.platform, FREEZE_IN_STEP["default"])
    n_rows = data.x_train.shape[1]
    n_folds = data.x_train.shape[0]
    n_pop = keys.shape[0]
    bsz = hp["batch_size"]  # [P]
    steps_per_epoch = -(-data.n_train[None, :] // bsz[:, None])  # [P, F]
    fold_ids = jnp.arange(n_folds)
    member_keys = jax.vmap(
        lambda k: jax.vmap(lambda f: jax.random.fold_in(k, f))(fold_ids)
    )(keys)
    eval_key = jax.random.key(0)
    # The randomness of the segment's epochs, drawn once before its epoch loop: the
    # key of member (p, f) in its epoch e is fold_in(member_key, e), its shuffle's words
    # come from fold_in(that key, 0). A trial that trains in epoch i of the segment
    # trains its epoch epochs_run + i (one that stops never resumes within a segment).
    # One batch of threefry hashes per segment rather than three per epoch (on a CPU
    # each is a rolled loop of ~80 small kernels).
    e_all = run.epochs_run[None, :] + jnp.arange(spec.seg_epochs)[:, None]  # [E, P]
    ekeys_all = jax.vmap(  # over the epochs, then the trials and the folds
        jax.vmap(lambda ks, ep: jax.vmap(lambda k: jax.random.fold_in(k, ep))(ks))
    )(jnp.broadcast_to(member_keys, (spec.seg_epochs, *member_keys.shape)), e_all)
    bits_all = jax.vmap(
        jax.vmap(jax.vmap(lambda k: _shuffle_bits(jax.random.fold_in(k, 0), n_rows)))
    )(ekeys_all)  # [E, P, F, rounds, 2]: 2.4 kB per member for 10 epochs

    def epoch(i, run: RunState):
        ran = run.active  # [P]
        # Each trial's own epoch index: its epochs trained so far (an active trial has
        # trained every epoch since it started, whenever its slot was filled).
        e = run.epochs_run  # [P]
        ekeys = ekeys_all[i]  # [P, F]
        perms = jax.vmap(
            jax.vmap(lambda b, n: _perm_from_bits(b, n, n_rows)), (0, None)
        )(bits_all[i], data.n_train)  # [P, F, N]
        # Computed once per epoch and kept: not re-derived inside each consumer fusion.
        perms = jax.lax.optimization_barrier(perms)

        train, fa = _fold_data(
            n_folds, (data.x_train, data.y_train, data.n_train, data.aux)
        )
        x_all, y_all, n_all, aux_all = train
        # Shuffle the data once per epoch when the shuffled copies fit the budget: every
        # step then slices its batch (contiguous rows; with a uniform batch size a plain
        # dynamic slice) instead of gathering rows through the permutation. Same rows,
        # same order, bit for bit; two gather kernels fewer per step.
        span = n_rows + spec.batch  # the last batch may run past the data: masked
        row_bytes = sum(
            math.prod(a.shape[2:]) * a.dtype.itemsize
            for a in (data.x_train, data.y_train)
        )
        budget = PRESHUFFLE_BYTES.get(spec.platform, PRESHUFFLE_BYTES["default"])
        shuffled = n_pop * n_folds * span * row_bytes <= budget
        if shuffled:
            ext = jnp.minimum(jnp.arange(span), n_rows - 1)
            rows_of = jax.vmap(
                jax.vmap(lambda p, x, y: (x[p[ext]], y[p[ext]]), (0, fa, fa)),
                (0, None, None),
            )
            # The step's data: each member's own shuffled rows, [P, F, span, ...].
            x_all, y_all = rows_of(perms, x_all, y_all)

        # The step runs over the members (trial, fold) flattened into one axis of
        # M = P * F: one vmap, so every batched matmul has a single batch dimension.
        # Under two vmaps (population, then folds; a fold axis of size one included)
        # XLA's GPU layouts kept a transpose per weight gradient and byte copies per
        # step outside the fused kernels, and the engine ran at ~0.55x the plain
        # jit(vmap(train)) on an H200 (benchmarks/RESULTS.md, 2026-11-28).
        n_mem = n_pop * n_folds

        def members(a):  # [P, F, ...] -> [M, ...]
            return a.reshape((n_mem, *a.shape[2:]))

        hp_m = jax.tree.map(lambda v: jnp.repeat(v, n_folds, axis=0), hp)  # [M]
        fold_m = jnp.tile(fold_ids, n_pop)  # member m trains fold m % F
        if shuffled:
            x_all, y_all = members(x_all), members(y_all)

        def member_batch(perm, ekey, hpm, f, x, y, t):
            # Fold-level arrays: a fold axis only with several folds (see _fold_data).
            def of_fold(a):
                return a if fa is None else a[f]

            n = of_fold(n_all)
            aux = jax.tree.map(of_fold, aux_all)
            # A static batch size when the bucket's trials share it (fewer ops per step).
            b = spec.batch if spec.uniform_batch else hpm["batch_size"]
            start = t * b
            idx = start + jnp.arange(spec.batch)
            rowmask = idx < n
            if not spec.uniform_batch:
                rowmask &= jnp.arange(spec.batch) < b
            if shuffled:  # x, y are this member's shuffled rows
                bx = jax.lax.dynamic_slice_in_dim(x, start, spec.batch)
                by = jax.lax.dynamic_slice_in_dim(y, start, spec.batch)
            else:
                rows = perm[jnp.minimum(idx, n_rows - 1)]
                bx, by = (x[rows], y[rows]) if fa is None else (x[f, rows], y[f, rows])
            # The real rows of this batch, counted by arithmetic (no reduction kernels).
            count = jnp.clip(n - start, 0, b).astype(jnp.int32)
            return Batch(bx, by, rowmask, jax.random.fold_in(ekey, t + 1), aux, count)

        def member_step(ts, perm, ekey, hpm, f, x, y, spe, live, t):
            batch = member_batch(perm, ekey, hpm, f, x, y, t)
            new, metrics = tr.step(ts, batch, hpm)
            # The step's loss, or its per-row terms (Trainable.loss_per_row):
            # accumulated as they come and summed once per epoch.
            loss = metrics["loss"]
            # Which members' state this step may change: the ones that train this
            # epoch (FREEZE_IN_STEP), and which take this step (some trials take
            # fewer steps per epoch than the bucket: they idle).
            keep = live if freeze_in_step else None
            if not spec.uniform_steps:
                keep = t < spe if keep is None else keep & (t < spe)
                loss = jnp.where(t < spe, loss, 0.0)
            if keep is not None:
                new = tree_where(keep, new, ts)
            # No per-step checks: a NaN/Inf loss makes the epoch's loss sum non-finite.
            return new, loss

        xa = 0 if shuffled else None  # shuffled copies are per member; data is shared
        over_members = jax.vmap(
            member_step, in_axes=(0, 0, 0, 0, 0, xa, xa, 0, 0, None)
        )
        perms_m, ekeys_m, spe_m = (
            members(perms),
            members(ekeys),
            members(steps_per_epoch),
        )
        live_m = jnp.repeat(ran, n_folds, axis=0)  # [M]
        # A Trainable may step all members at once (the built-in MLP's fused kernel,
        # jaxhp.tasks.fused): the engine builds the batches, and the step leaves a
        # member as it is where `live` is off or its batch is empty (a trial idling
        # through the steps its bucket takes beyond its own). It is made here, outside
        # the step loop, so what it derives from `hp` is computed once an epoch. Over
        # several devices each runs its own members (shard_map): a kernel's custom
        # call is opaque to XLA's partitioner, which would gather them all.
        population_step = getattr(tr, "population_step", None)
        if population_step is not None:
            step_args, step_members = population_step(
                hp_m, live_m, platform=spec.platform
            )
            if spec.mesh is not None:
                step_members = _shard_members(step_members, spec.mesh, len(step_args))
        over_batches = jax.vmap(member_batch, in_axes=(0, 0, 0, 0, xa, xa, None))

        def train_step(t, carry):
            ts, loss_sum = carry
            if population_step is not None:
                batch = over_batches(perms_m, ekeys_m, hp_m, fold_m, x_all, y_all, t)
                ts, loss = step_members(*step_args, ts, batch)
            else:
                ts, loss = over_members(
                    ts, perms_m, ekeys_m, hp_m, fold_m, x_all, y_all, spe_m, live_m, t
                )
            if loss.shape != loss_sum.shape:
                want = f"[{spec.batch}] (per row)" if loss_per_row else "a scalar"
                raise TypeError(
                    f"{type(tr).__name__}.step returned a loss of shape "
                    f"{loss.shape[1:]}; expected {want} (see Trainable.loss_per_row)"
                )
            return ts, loss_sum + loss

        # A step's loss: a scalar, or per-row terms (Trainable.loss_per_row).
        loss_shape = (n_mem, spec.batch) if loss_per_row else (n_mem,)
        # A counted loop, not a scan over arange(steps): the step index is the loop's
        # own counter, not a slice of an array (on a GPU one kernel fewer per step).
        ts, loss_sum = jax.lax.fori_loop(
            0,
            spec.steps,
            train_step,
            (jax.tree.map(members, run.tstate), jnp.zeros(loss_shape, jnp.float32)),
        )
        ts = jax.tree.map(lambda a: a.reshape((n_pop, n_folds, *a.shape[1:])), ts)
        loss_sum = jnp.sum(loss_sum.reshape(n_pop, n_folds, -1), axis=2)

        def member_eval(ts, hpm, x, y, mask, aux):
            return tr.evaluate(ts, Batch(x, y, mask, eval_key, aux), hpm)

        val, fa = _fold_data(n_folds, (data.x_val, data.y_val, data.val_mask, data.aux))

        def validate():  # {name: [P, F]}
            return jax.vmap(
                jax.vmap(member_eval, in_axes=(0, None, fa, fa, fa, fa)),
                in_axes=(0, 0, None, None, None, None),
            )(ts, hp, *val)

        if spec.eval_every == 1:
            due = ran
            metrics = validate()
        else:
            # Validation is due every `eval_every` epochs and at a trial's last epoch;
            # it runs (for the whole population) only when some trial is due.
            due = ran & (((e + 1) % spec.eval_every == 0) | (e + 1 >= hp["epochs"]))
            skipped = jax.tree.map(
                lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(validate)
            )
            metrics = jax.lax.cond(jnp.any(due), validate, lambda: skipped)
        nan = jnp.float32(jnp.nan)
        per_fold = jnp.where(
            due[:, None], metrics[spec.metric].astype(jnp.float32), nan
        )
        value = jnp.mean(per_fold, axis=1)  # [P]
        oriented = spec.sign * value
        blew_up = ~jnp.all(jnp.isfinite(loss_sum), axis=1) | (
            due & ~jnp.isfinite(value)
        )
        ok = ran & ~blew_up
        # Trials that did not train this epoch (inactive) keep their state from its
        # start, bit for bit: frozen in every step (FREEZE_IN_STEP) or put back here. A
        # plain select, not a `cond` that skips it when every trial trained: a branch
        # costs more than the select (P = 1 on a CPU: 1.0x against 0.98x `vmap_val`),
        # and on a GPU each branch reads its predicate back to the host. A trial that
        # blew up this epoch keeps the state it reached (it trains no more, and its
        # best-epoch weights come from finite epochs only).
        if not freeze_in_step:
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
            best=tree_where(improved, _keep(tr, ts), run.best),  # a select, as above
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

    def run_epochs(run: RunState):
        row_shapes = jax.eval_shape(lambda r: epoch(0, r)[1], run)
        bufs = jax.tree.map(
            lambda s: jnp.full((spec.seg_epochs, *s.shape), jnp.nan, s.dtype),
            row_shapes,
        )

        if spec.static_epochs:
            # A loop of exactly seg_epochs epochs (a static trip count): an accelerator
            # runs it without reading a condition back to the host after every epoch.
            # Only full segments run it (n_epochs == seg_epochs: _run_chunk gives a
            # short one the while loop's program, run_recycled's are all full). Epochs
            # after every trial went inactive run with every trial masked out: exact
            # no-ops (no stopper here, and a trial that did not train keeps its state
            # bit for bit) that cost their steps' time. Without a stopper that happens
            # only when a whole bucket diverges, or when every recycled slot finishes
            # before its segment ends. `done` counts the epochs some trial trained.
            def body_static(i, c):
                done, r, b = c
                live = jnp.any(r.active)
                r, row = epoch(i, r)
                b = jax.tree.map(lambda buf, x: buf.at[i].set(x), b, row)
                return done + live.astype(jnp.int32), r, b

            return jax.lax.fori_loop(
                0, spec.seg_epochs, body_static, (jnp.int32(0), run, bufs)
            )

        def cond(c):
            i, r, _ = c
            return (i < n_epochs) & jnp.any(r.active)

        def body(c):
            i, r, b = c
            r, row = epoch(i, r)
            b = jax.tree.map(lambda buf, x: buf.at[i].set(x), b, row)
            return i + 1, r, b

        return jax.lax.while_loop(cond, body, (jnp.int32(0), run, bufs))

    i, run, bufs = run_epochs(run)
    # What the host reads after a segment, packed into one vector: one transfer instead
    # of one per leaf (~30 leaves; it shows at small populations).
    best1 = run.best if n_pop == 1 else None  # a lone trial's best state: cheap to take
    out = SegmentOut(i, bufs, _flags(run), run.active, best1)
    return run, _pack((spec, n_folds, n_pop), out)


class SegmentOut(NamedTuple):
    """A segment's results for the host: epochs done, per-epoch rows, per-trial flags."""

    done: Any  # epochs this segment ran
    bufs: Any  # {name: [E, P, ...]} per-epoch rows (NaN where a trial did not train)
    flags: Any  # (diverged, stopped, epochs_run, best_value, best_epoch), each [P]
    active: Any  # [P]
    best1: Any  # the best-epoch state when the population is one trial, else None


_LAYOUTS: dict[Hashable, tuple] = {}


def _shard_members(step: Callable, mesh: Any, n_args: int) -> Callable:
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
    # No replication checks: a Pallas kernel has no rule for them.
    return shard_map(
        step, mesh=mesh, in_specs=(spec,) * (n_args + 2), out_specs=spec, **check
    )


def _pack(key: Hashable, tree: Any) -> dict[str, jax.Array]:
    """Concatenate ``tree``'s leaves, raveled, into as few vectors as possible (in the
    traced program): every 32-bit and boolean leaf into one ``uint32`` vector (bit casts,
    so nothing is rounded), any other dtype into a vector of its own. The layout to undo
    it is kept under ``key`` (static shapes: the spec, the fold count and the population
    determine it). One transfer instead of one per leaf shows at small populations."""
    leaves, treedef = jax.tree.flatten(tree)
    groups: dict[str, list] = {}
    layout = []
    for leaf in leaves:
        dt = jnp.dtype(leaf.dtype)
        if dt == jnp.bool_:
            group_name, word = "u32", leaf.astype(jnp.uint32)
        elif _fits_word(dt):
            group_name, word = "u32", jax.lax.bitcast_convert_type(leaf, jnp.uint32)
        else:
            group_name, word = dt.name, leaf
        group = groups.setdefault(group_name, [])
        layout.append((group_name, dt.name, sum(x.size for x in group), leaf.shape))
        group.append(jnp.ravel(word))
    _LAYOUTS[key] = (treedef, layout)
    return {g: jnp.concatenate(v) for g, v in groups.items()}


def _unpack(key: Hashable, packed: Mapping[str, np.ndarray]) -> Any:
    """The host tree :func:`_pack` packed under ``key``, from the fetched vectors."""
    treedef, layout = _LAYOUTS[key]

    def leaf(group_name, dt, off, shape):
        v = np.asarray(packed[group_name][off : off + math.prod(shape)])
        if group_name == "u32":
            v = v.astype(bool) if dt == "bool" else v.view(np.dtype(dt))
        return v.reshape(shape)

    return jax.tree.unflatten(treedef, [leaf(*spec) for spec in layout])


def _segment_out(spec: SegmentSpec, n_folds: int, n_pop: int, packed) -> SegmentOut:
    """Fetch and unpack a segment's packed results (one transfer, see :func:`_pack`)."""
    return _unpack((spec, n_folds, n_pop), _fetch(packed))


# ----------------------------------------------------------------------------- host side


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


@dataclass
class BestState:
    trial_id: int
    value: float  # oriented (higher is better)
    trainable: Any
    state: Any  # host copy of the trial's best-epoch state, [F, ...]
    hp: dict[str, np.ndarray]  # the trial's hyperparameters as 0-d arrays


@dataclass
class _Compiled:
    init: Callable
    segment: Callable
    refill: Callable
    # Bytes of run state per trial, by the hyperparameters' dtypes (_state_bytes): kept
    # with the programs they were measured from, so they go when the programs go.
    state_bytes: dict = field(default_factory=dict)


_CACHE: dict[Hashable, _Compiled] = {}
_SEEN: set = set()
_take = jax.jit(
    lambda tree, j: jax.tree.map(lambda a: a[j], tree)
)  # bucket shapes compiled so far (the planner prefers them)


def _flags(run: RunState) -> tuple:
    return (run.diverged, run.stopped, run.epochs_run, run.best_value, run.best_epoch)


class BucketShape(NamedTuple):
    trainable: Hashable
    batch: int  # B
    steps: int  # S
    key: tuple  # (trainable, B, S)


def _bucket_spec(
    task: Task,
    hp: Mapping[str, np.ndarray],
    segment_epochs: int,
    stopper: Any,
    eval_every: int = 1,
    platform: str | None = None,
) -> tuple[BucketShape, SegmentSpec]:
    """The shape and compiled-segment spec of a bucket holding the trials ``hp``, to run
    on ``platform`` (default: JAX's default backend)."""
    platform = platform or jax.default_backend()
    shape = _bucket_shape(task, hp, int(task.data.n_train.max()))
    spec = SegmentSpec(
        trainable=shape.trainable,
        metric=task.metric,
        sign=1.0 if task.direction == "maximize" else -1.0,
        batch=shape.batch,
        steps=shape.steps,
        seg_epochs=segment_epochs,
        stopper=stopper,
        uniform_steps=bool(
            np.all(
                -(-task.data.n_train[None, :] // hp["batch_size"][:, None])
                == shape.steps
            )
        ),
        uniform_batch=bool(np.all(hp["batch_size"] == shape.batch)),
        eval_every=eval_every,
        platform=platform,
        static_epochs=stopper is None
        and STATIC_EPOCH_LOOP.get(platform, STATIC_EPOCH_LOOP["default"]),
    )
    return shape, spec


def _bucket_shape(task: Task, hp: Mapping[str, np.ndarray], n_rows: int) -> BucketShape:
    trainable = task.trainable(hp)
    batch = next_pow2(int(np.max(hp["batch_size"])))
    steps = _quantize_steps(-(-n_rows // int(np.min(hp["batch_size"]))))
    return BucketShape(trainable, batch, steps, (trainable, batch, steps))


#: Cost-model constants per backend: seconds to compile one bucket's programs, seconds of
#: fixed overhead per optimizer step, and sustained training FLOP/s. Rough on purpose:
#: they only decide whether merging two buckets (more padding, one compile fewer) pays.
COST_MODEL = {
    "cpu": {"compile_s": 6.0, "step_s": 2e-5, "flops": 3e10},
    "gpu": {"compile_s": 4.0, "step_s": 1e-5, "flops": 2e13},
    "tpu": {"compile_s": 4.0, "step_s": 1e-5, "flops": 5e13},
}


def _bucket_cost(
    task: Task,
    hp: Mapping[str, np.ndarray],
    idx: np.ndarray,
    n_rows: int,
    n_folds: int,
    platform: str,
    seen: Any,
) -> float:
    """Estimated seconds to compile (unless in ``seen``, the shapes compiled) and run
    the trials ``idx`` as one bucket on ``platform``."""
    c = COST_MODEL.get(platform, COST_MODEL["gpu"])
    sub = {k: np.asarray(v)[idx] for k, v in hp.items()}
    shape = _bucket_shape(task, sub, n_rows)
    padded = next_pow2(len(idx))
    epochs = int(sub["epochs"].max())
    flops_row = getattr(task, "flops_per_row", lambda tr: 0.0)(shape.trainable)
    steps = shape.steps * epochs
    run = steps * (
        c["step_s"] + padded * n_folds * shape.batch * flops_row / c["flops"]
    )
    compiled = shape.key + (padded,) in seen
    return run + (0.0 if compiled else c["compile_s"])


def _group_by(keys: Any, batch: np.ndarray) -> dict[tuple, np.ndarray]:
    """The trials of each (shape key, batch bucket), in order. Integer keys are grouped
    by NumPy (a Python loop cost ~1 us per trial: ~20 ms at P = 16384); other hashables,
    one trial at a time."""
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
    platform: str | None = None,
    use_seen: bool = True,
) -> list[np.ndarray]:
    """Group a round's trials into buckets, each trained by one compiled program.

    - ``"none"``: one bucket; everything padded to the largest shape.
    - ``"pow2"``: one bucket per power-of-two width (the task's shape key) and batch size.
    - ``"auto"``: start from ``"pow2"`` and greedily merge the pair of buckets whose merge
      lowers the estimated time the most (a compile saved against padding added, from
      ``COST_MODEL``; shapes already compiled cost no compile, unless ``use_seen`` is
      False), until no merge helps. Small populations on a CPU end up in few buckets,
      large ones on a GPU in many.

    ``use_seen=False`` makes the plan a function of ``hp`` alone, not of what this
    process compiled before: under a stopper that compares a bucket's trials with each
    other, the buckets are the comparison sets, and a study resumed in a fresh process
    must stop the trials an uninterrupted one stops.
    """
    n = len(hp["batch_size"])
    if bucketing == "none":
        return [np.arange(n)]
    groups = _group_by(task.shape_keys(hp), next_pow2_array(hp["batch_size"]))
    out = [groups[k] for k in sorted(groups, key=repr)]
    if bucketing == "pow2" or len(out) == 1:
        return out
    n_folds = task.data.n_folds
    platform = platform or jax.default_backend()
    seen = _SEEN if use_seen else frozenset()
    cost = [_bucket_cost(task, hp, g, n_rows, n_folds, platform, seen) for g in out]
    while len(out) > 1:
        best_gain, best_pair = 0.0, None
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                merged = np.sort(np.concatenate([out[i], out[j]]))
                gain = (
                    cost[i]
                    + cost[j]
                    - _bucket_cost(task, hp, merged, n_rows, n_folds, platform, seen)
                )
                if gain > best_gain:
                    best_gain, best_pair = gain, (i, j, merged)
        if best_pair is None:
            break
        i, j, merged = best_pair
        out = [g for k, g in enumerate(out) if k not in (i, j)] + [merged]
        cost = [c for k, c in enumerate(cost) if k not in (i, j)]
        cost.append(_bucket_cost(task, hp, merged, n_rows, n_folds, platform, seen))
    return sorted(out, key=lambda g: int(g[0]))


def _quantize_steps(s: int) -> int:
    """Round a step count up to 1/32-octave steps (at most ~3% idle steps), so that varied
    batch sizes share programs; counts up to 64 are kept exact."""
    if s <= 64:
        return s
    q = 1 << (int(math.log2(s)) - 5)
    return -(-s // q) * q


def _device_data(task: Task, sharding: Any = None) -> FoldArrays:
    """The task's fold arrays on the device (or replicated with ``sharding``), cached."""
    cache = task.__dict__.setdefault("_jaxhp_device_data", {})
    key = (
        None
        if sharding is None
        else (tuple(d.id for d in sharding.mesh.devices.flat), sharding.spec)
    )
    if key not in cache:
        d = task.data
        host = FoldArrays(
            d.x_train, d.y_train, d.n_train, d.x_val, d.y_val, d.val_mask, d.aux
        )
        cache[key] = (
            jax.tree.map(jnp.asarray, host)
            if sharding is None
            else jax.device_put(host, sharding)
        )
    return cache[key]


def _keep(trainable, state: Any) -> Any:
    """What the engine keeps of the best epoch of ``state`` (``[P, F, ...]``):
    ``trainable.keep`` of each member's state (a function of one trial, like the rest
    of the protocol; for the built-in tasks the weights, not the optimizer state) when
    the Trainable defines it, else the whole state."""
    keep = getattr(trainable, "keep", None)
    return state if keep is None else jax.vmap(jax.vmap(keep))(state)


def _init_members(trainable, keys: jax.Array, hp: dict, n_folds: int):
    def member(k, f, hpm):
        return trainable.init(
            jax.random.fold_in(jax.random.fold_in(k, f), 2**31 - 1), hpm
        )

    over_folds = jax.vmap(member, in_axes=(None, 0, None))
    return jax.vmap(over_folds, in_axes=(0, None, 0))(keys, jnp.arange(n_folds), hp)


def _start(
    spec: SegmentSpec, n_folds: int, seed: jax.Array, rows: Any
) -> tuple[jax.Array, RunState]:
    """Keys and initial run state of a bucket, in one program (one dispatch).
    ``rows``: the trials' ``(ids, hp, live)``, packed or not (:func:`host_rows`)."""
    ids, hp, live = unrows(rows)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(ids)  # [P]
    tstate = _init_members(spec.trainable, keys, hp, n_folds)
    n = ids.shape[0]
    return keys, RunState(
        tstate=tstate,
        best=jax.tree.map(jnp.copy, _keep(spec.trainable, tstate)),
        active=live,
        diverged=jnp.zeros(n, bool),
        stopped=jnp.zeros(n, bool),
        epochs_run=jnp.zeros(n, jnp.int32),
        best_value=jnp.full(n, -jnp.inf, jnp.float32),
        best_epoch=jnp.full(n, -1, jnp.int32),
        stop_state=spec.stopper.init(n) if spec.stopper is not None else None,
    )


def _refill(
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
    new_keys, fresh = _start(spec, n_folds, seed, (ids, hp, fill))
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


def _programs(spec: SegmentSpec, n_folds: int) -> _Compiled:
    """The bucket's jitted programs (jit's own cache specialises them per shape; plain
    ``jax.jit`` rather than ahead-of-time objects keeps JAX's fast C++ dispatch)."""
    options = SEGMENT_COMPILER_OPTIONS.get(spec.platform)
    key = (spec, n_folds, tuple(sorted((options or {}).items())))
    hit = _CACHE.get(key)
    if hit is None:
        # Donating the run state lets XLA update it in place (not supported on the CPU).
        donate = () if spec.platform == "cpu" else (0,)
        extra = {"compiler_options": dict(options)} if options else {}
        hit = _Compiled(
            init=jax.jit(functools.partial(_start, spec, n_folds)),
            segment=jax.jit(
                functools.partial(_segment, spec), donate_argnums=donate, **extra
            ),
            refill=jax.jit(functools.partial(_refill, spec, n_folds)),
        )
        _CACHE[key] = hit
    return hit


_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile_seconds = [0.0]


def _on_duration(event: str, duration: float, **kwargs: Any) -> None:
    if event in _COMPILE_EVENTS:
        _compile_seconds[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def run_population(
    task: Task,
    hp: Mapping[str, np.ndarray],
    trial_ids: np.ndarray,
    *,
    seed: int,
    stopper: Any = None,
    segment_epochs: int = 10,
    bucketing: str = "auto",
    best_so_far: float = -math.inf,
    on_segment: Callable[[BucketReport, int], None] | None = None,
    inspect: Callable[[np.ndarray, RunState], None] | None = None,
    devices: Sequence[jax.Device] | None = None,
    memory_budget: int | None = None,
    eval_every: int = 1,
) -> tuple[Outcomes, list[BucketReport], BestState | None]:
    """Train the trials ``trial_ids`` with hyperparameters ``hp`` (``{name: [P]}``).

    Returns the outcome of every trial (:class:`Outcomes`, in trial order), a report
    per bucket, and the best-epoch state of
    the best trial if it beats ``best_so_far`` (an oriented value). ``inspect(idx, run)``,
    if given, sees each bucket's final run state (rows ``idx`` of ``hp``, then padding).

    ``devices`` (default: every local device) shard the population axis; a trial's
    result does not depend on them. ``memory_budget`` (bytes per device) splits a bucket
    into chunks that fit, sized from the compiled program's memory analysis.
    ``eval_every`` validates every that many epochs and at each trial's last epoch (its
    curves hold NaN values in between; the best epoch is among the validated ones).
    """
    trial_ids = np.asarray(trial_ids)
    if devices is None:  # every device of every process (multi-host: see README)
        devices = jax.devices() if jax.process_count() > 1 else jax.local_devices()
    devices = list(devices)
    n_dev = len(devices)
    if n_dev > 1:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.asarray(devices), ("pop",))
        sharding = NamedSharding(mesh, PartitionSpec("pop"))
        data = _device_data(task, NamedSharding(mesh, PartitionSpec()))
    else:
        sharding = None
        data = _device_data(task)
        if devices[0] != jax.local_devices()[0]:
            data = jax.device_put(data, devices[0])
    n_folds = task.data.n_folds
    n_rows = int(task.data.n_train.max())

    # The platform of the devices given (not JAX's default backend) picks the CPU or
    # accelerator paths: a CPU run on a GPU machine takes the CPU's.
    platform = devices[0].platform
    with _phase("jaxhp.plan"):
        groups = plan_buckets(
            task,
            hp,
            bucketing=bucketing,
            n_rows=n_rows,
            platform=platform,
            use_seen=stopping.is_per_trial(stopper),
        )

    parts: list[Outcomes] = []
    reports: list[BucketReport] = []
    best: BestState | None = None
    for group in groups:
        gsub = {k: np.asarray(v)[group] for k, v in hp.items()}
        shape, spec = _bucket_spec(
            task, gsub, segment_epochs, stopper, eval_every, platform
        )
        trainable = shape.trainable
        if sharding is not None and getattr(trainable, "population_step", None):
            spec = dataclasses.replace(spec, mesh=sharding.mesh)
        comp = _programs(spec, n_folds)
        chunk = (
            _chunk_size(comp, spec, gsub, data, seed, memory_budget, n_dev)
            if memory_budget is not None
            else len(group)
        )
        if (
            platform == "cpu"
            and chunk > n_dev
            and jax.process_count() == 1
            and stopping.is_per_trial(stopper)
        ):
            # Not across processes (every one must pick the same chunks, and the rule
            # reads this host's cores), nor under a stopper that compares the trials
            # of a population with each other: a chunk would be its comparison set.
            chunk = min(chunk, _cpu_chunk(comp, gsub, seed, n_dev, n_folds))
        for part, i in enumerate(range(0, len(group), chunk)):
            idx = group[i : i + chunk]
            bucket = _run_chunk(
                task,
                spec,
                comp,
                shape,
                idx,
                hp,
                trial_ids,
                data=data,
                seed=seed,
                sharding=sharding,
                n_dev=n_dev,
                chunk=chunk if chunk < len(group) else None,
                on_segment=on_segment,
            )
            bucket.report.part = part
            parts.append(bucket.outcomes)
            reports.append(bucket.report)
            cand = bucket.best_candidate
            top = best.value if best is not None else best_so_far
            if cand is not None and cand[0] > top:
                j = cand[1]
                best = BestState(
                    trial_id=int(trial_ids[idx[j]]),
                    value=float(cand[0]),
                    trainable=trainable,
                    state=bucket.best_state(j),
                    hp={k: np.asarray(v[j]) for k, v in bucket.hp.items()},
                )
            if inspect is not None:
                inspect(idx, bucket.run)
            del bucket
    outcomes = Outcomes.concat(parts)
    if len(parts) > 1:  # in trial order
        outcomes = outcomes.take(np.argsort(outcomes.trial_id, kind="stable"))
    return outcomes, reports, best


@dataclass
class _Chunk:
    outcomes: Outcomes
    report: BucketReport
    best_candidate: tuple[float, int] | None  # (oriented value, row) of its best trial
    run: RunState
    hp: dict[str, np.ndarray]
    best1: Any  # host copy of the best state when the chunk holds one trial

    def best_state(self, j: int) -> Any:
        if self.best1 is not None:
            return jax.tree.map(lambda a: a[0], self.best1)
        return _fetch(_take(self.run.best, j))


def _init_shapes(comp: _Compiled, gsub: Mapping[str, np.ndarray], seed: int, p: int):
    """A population of ``p`` of the bucket's hyperparameters as shapes, and the shapes
    of the initial-state program's (keys, run state) for it: traced, not run."""
    hp_p = {k: jax.ShapeDtypeStruct((p,), v.dtype) for k, v in gsub.items()}
    ids = jax.ShapeDtypeStruct((p,), np.uint32)
    live = jax.ShapeDtypeStruct((p,), np.bool_)
    rows = host_rows((ids, hp_p, live))
    keys, run = jax.eval_shape(comp.init, np.uint32(seed % 2**32), rows)
    return hp_p, keys, run


def _pow2_floor(x: float) -> int:
    """The largest power of two not above ``x`` (1 below 2)."""
    return 2 ** int(math.log2(max(x, 1.0)))


_MEMORY: dict[Hashable, tuple[float, float]] = {}


def _memory_model(comp: _Compiled, spec: SegmentSpec, gsub, data, seed) -> tuple:
    """(fixed bytes, bytes per trial) of a bucket's segment, from the compiled program's
    memory analysis at two small populations (arguments + outputs + temporaries)."""
    key = (spec, tuple((k, v.dtype.str) for k, v in gsub.items()), data.x_train.shape)
    if key not in _MEMORY:
        sizes = []
        for p in (8, 16):
            hp_p, keys, run = _init_shapes(comp, gsub, seed, p)
            m = (
                comp.segment.lower(run, host_rows(hp_p), keys, data, np.int32(1))
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
        _MEMORY[key] = (max(sizes[0] - 8 * per_trial, 0.0), per_trial)
    return _MEMORY[key]


#: On a CPU a bucket trains in chunks of trials, one after another through the same
#: compiled program, whose run state (weights, optimizer state, best-epoch copy, every
#: fold's) totals about ``CPU_CHUNK_BYTES_PER_CORE`` per core the process may use (two
#: cores' worth at least), and that hold at least ``CPU_MIN_MEMBERS`` members (trial x
#: fold; a few per op still amortise its overhead). One large vmapped population
#: streams every trial's weights through memory at every step; a chunk's stay in the
#: caches. On the 2-core CPU here, against one program for the whole population: 256
#: reference MLPs (158 kB of state each) trained 1.7x faster in chunks of 8, 32 of width
#: 256 (1.8 MB each) 1.5x faster in chunks of 4, and 64 with 5 folds (788 kB) 1.6x
#: faster in chunks of 2 (benchmarks/RESULTS.md). Accelerators want the whole
#: population at once, and so does a stopper that compares a population's trials with
#: each other (``stopping.is_per_trial``): a chunk would be its comparison set.
CPU_CHUNK_BYTES_PER_CORE = 1 << 20
CPU_MIN_MEMBERS = 4


def _state_bytes(comp: _Compiled, gsub: Mapping[str, np.ndarray], seed: int) -> float:
    """Bytes of run state per trial, from the initial-state program's output shapes
    (traced, not compiled; remembered by the program). Keyed by the program's
    ``id``, a module-level cache went stale once a program was dropped (the tests'
    fresh program caches) and another took its address."""
    key = tuple((k, v.dtype.str) for k, v in gsub.items())
    if key not in comp.state_bytes:
        p = 8
        _, _, run = _init_shapes(comp, gsub, seed, p)
        leaves = jax.tree.leaves(run)
        comp.state_bytes[key] = sum(a.size * a.dtype.itemsize for a in leaves) / p
    return comp.state_bytes[key]


def _cpu_chunk(comp: _Compiled, gsub, seed: int, n_dev: int, n_folds: int) -> int:
    """Trials per chunk on a CPU (``CPU_CHUNK_BYTES_PER_CORE``, ``CPU_MIN_MEMBERS``): a
    power of two per device."""
    cores = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1
    )
    fit = max(cores, 2) * CPU_CHUNK_BYTES_PER_CORE / _state_bytes(comp, gsub, seed)
    least = _pow2_floor(CPU_MIN_MEMBERS / n_folds)
    return n_dev * max(least, _pow2_floor(fit / n_dev))


def _chunk_size(comp, spec, gsub, data, seed, budget: int, n_dev: int) -> int:
    """The most trials (a power of two) whose segment fits ``budget`` bytes per device."""
    fixed, per_trial = _memory_model(comp, spec, gsub, data, seed)
    fit = int((budget - fixed) // per_trial) * n_dev
    if fit < 1:
        raise MemoryError(
            f"memory_budget={budget} bytes cannot hold even one trial of bucket "
            f"{spec.trainable} (about {fixed:.3g} bytes fixed + {per_trial:.3g} per trial)"
        )
    n = len(next(iter(gsub.values())))
    return n if fit >= n else max(n_dev, _pow2_floor(fit))


def _fetch(tree: Any) -> Any:
    """Host copies of device arrays; across processes, every shard is gathered."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def get(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return jax.device_get(a)
        if a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(get, tree)


def _pop_size(size: int, n_dev: int) -> int:
    """Padded population: a power of two, and a multiple of the device count."""
    p = next_pow2(size)
    return p if n_dev <= 1 else -(-max(p, n_dev) // n_dev) * n_dev


def _run_chunk(
    task: Task,
    spec: SegmentSpec,
    comp: _Compiled,
    shape: BucketShape,
    idx: np.ndarray,
    hp: Mapping[str, np.ndarray],
    trial_ids: np.ndarray,
    *,
    data: FoldArrays,
    seed: int,
    sharding: Any,
    n_dev: int,
    chunk: int | None,
    on_segment: Callable[[BucketReport, int], None] | None,
) -> _Chunk:
    """Train the trials ``idx`` (rows of ``hp``) as one padded population (of the
    bucket's ``chunk`` size when it is split: a short last chunk reuses the program)."""
    n_folds = task.data.n_folds
    trainable = spec.trainable
    segment_epochs = spec.seg_epochs
    size = len(idx)
    padded = _pop_size(max(size, chunk or 0), n_dev)
    rows = np.concatenate([idx, np.full(padded - size, idx[0])])
    sub = {k: np.asarray(v)[rows] for k, v in hp.items()}
    gkey = (
        " ".join(
            f"{k[0].upper()}{getattr(trainable, k)}"
            for k in ("depth", "width")
            if hasattr(trainable, k)
        )
        + f" B{shape.batch} S{shape.steps} P{padded}"
    )
    t_start = time.perf_counter()
    ids = np.concatenate([trial_ids[idx], np.zeros(padded - size, trial_ids.dtype)])
    ids, live = np.asarray(ids, np.uint32), np.arange(padded) < size
    with _phase("jaxhp.hp_to_device"):
        # Packed: one transfer per call (PACK_HOST_ROWS), for the initial state and
        # for every segment.
        hp_dev, rows = host_rows(sub), host_rows((ids, sub, live))
        if sharding is None and HP_DEVICE_PUT:
            hp_dev = jax.device_put(hp_dev, next(iter(data.x_train.devices())))
        elif sharding is not None:  # the population axis split over the devices
            hp_dev, rows = jax.device_put((hp_dev, rows), sharding)
        # else NumPy: each call takes it as it is (see HP_DEVICE_PUT)
    start_args = (np.uint32(seed % 2**32), rows)
    compiled_before = _compile_seconds[0]
    _SEEN.add(shape.key + (padded,))
    t_run = time.perf_counter()
    with _phase("jaxhp.init"):
        keys, run = comp.init(*start_args)
    max_epochs = int(sub["epochs"][:size].max())
    curves: list[dict] = []
    epoch0 = 0
    segments = 0
    report = BucketReport(
        gkey, size, padded, spec.batch, spec.steps, 0, 0.0, 0.0, chunk, n_dev
    )
    flags = best1 = None
    while epoch0 < max_epochs:
        n_ep = min(segment_epochs, max_epochs - epoch0)
        # A fixed-count loop would run a short segment's missing epochs masked, for
        # nothing: the bucket's last segment, or its only one when its trials' epochs
        # are fewer than segment_epochs. Those take the while loop's program.
        seg_spec = spec
        if spec.static_epochs and n_ep < spec.seg_epochs:
            seg_spec = dataclasses.replace(spec, static_epochs=False)
        with _phase("jaxhp.segment"):
            run, packed = _programs(seg_spec, n_folds).segment(
                run, hp_dev, keys, data, np.int32(n_ep)
            )
        with _phase("jaxhp.fetch"):
            out = _segment_out(seg_spec, n_folds, padded, packed)
        done, bufs, flags, best1 = int(out.done), out.bufs, out.flags, out.best1
        curves.append({k: v[:done] for k, v in bufs.items()})
        epoch0 += done
        segments += 1
        report.segments = segments
        report.run_time = time.perf_counter() - t_run
        if on_segment is not None:
            on_segment(report, epoch0)
        if done < n_ep:  # the segment ended early: every trial is inactive
            break
    # Seconds spent tracing and compiling this bucket's programs (0 when cached).
    report.compile_time = _compile_seconds[0] - compiled_before
    report.run_time = time.perf_counter() - t_run - report.compile_time
    wall = time.perf_counter() - t_start
    if flags is None:  # no epoch to run (every trial has epochs == 0)
        flags = _fetch(_flags(run))
    with _phase("jaxhp.outcomes"):
        outcomes, best_candidate = _outcomes(
            spec, flags, curves, trial_ids[idx], wall, gkey
        )
    return _Chunk(
        outcomes=outcomes,
        report=report,
        best_candidate=best_candidate,
        run=run,
        hp=sub,
        best1=best1 if padded == 1 else None,
    )


def _outcomes(
    spec: SegmentSpec,
    flags: tuple,
    curves: list[dict],
    ids: np.ndarray,
    wall: float,
    gkey: str,
) -> tuple[Outcomes, tuple[float, int] | None]:
    """A chunk's outcomes from its flags and per-segment rows (``ids``: the chunk's
    real trials, the rows before its padding), and its best trial's (oriented value,
    row), if any. Columns for the whole chunk at once, with no per-trial Python: a loop
    of NumPy calls per trial cost ~9 us each (0.15 s at P = 16384 on a 2-core CPU), and
    building a record per trial ~5 us, against a GPU round of ~1 s at that size."""
    sign, size = spec.sign, len(ids)
    diverged, stopped, epochs_run, best_value, best_epoch = (
        np.asarray(a)[:size] for a in flags
    )
    cat = (
        {k: np.concatenate([c[k] for c in curves], 0) for k in curves[0]}
        if curves
        else {}
    )
    # [size, E, ...], each trial's rows contiguous. A trial trains from epoch 0 until
    # it goes inactive: its rows are a prefix, and train_loss is non-NaN exactly where
    # it trained.
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
        wall_time=np.full(size, wall),
        bucket=np.full(size, gkey),
    )
    cand = np.where(~diverged & (best_epoch >= 0), best_value, -np.inf)
    j = int(np.argmax(cand))
    return outcomes, ((float(cand[j]), j) if np.isfinite(cand[j]) else None)


# ----------------------------------------------------------------------------- recycling


def run_recycled(
    task: Task,
    shape_hp: Mapping[str, np.ndarray],
    source: Callable[[int], tuple[np.ndarray, dict[str, np.ndarray]]],
    on_finish: Callable[[list[TrialOutcome], int], None],
    *,
    slots: int,
    seed: int,
    stopper: Any = None,
    segment_epochs: int = 1,
    best_so_far: float = -math.inf,
    on_segment: Callable[[BucketReport, int], None] | None = None,
    eval_every: int = 1,
) -> tuple[BucketReport, BestState | None]:
    """Train a stream of trials in ``slots`` slots, refilling each slot when it frees.

    One compiled program serves every trial the stream can produce: its shapes come
    from ``shape_hp`` (rows spanning the space: the largest width, the largest and the
    smallest batch size). ``source(n)`` gives up to ``n`` new trials (their ids and
    hyperparameters, ``{name: [m]}``; ``m == 0`` when there are no more); between
    segments of ``segment_epochs`` epochs, every trial that finished (its epochs done,
    stopped, pruned or diverged) is reported to ``on_finish(outcomes, boundary)`` and
    its slot is refilled from ``source`` with fresh keys, weights and optimizer state,
    without recompiling. A trial's result is the one it has trained alone (its keys
    derive from ``(seed, trial id)``). ``eval_every``: as in :func:`run_population`.
    """
    n_folds = task.data.n_folds
    shape, spec = _bucket_spec(task, shape_hp, segment_epochs, stopper, eval_every)
    sign = spec.sign
    comp = _programs(spec, n_folds)
    data = _device_data(task)
    P = next_pow2(slots)
    seed32 = np.uint32(seed % 2**32)
    report = BucketReport(
        f"recycled B{spec.batch} S{spec.steps} P{P}",
        0,
        P,
        spec.batch,
        spec.steps,
        0,
        0.0,
        0.0,
    )
    compiled_before = _compile_seconds[0]
    t_run = time.perf_counter()

    ids0, hp0 = source(P)
    m = len(ids0)
    if m == 0:
        return report, None
    sub = {k: np.concatenate([v, np.repeat(v[:1], P - m)]) for k, v in hp0.items()}
    ids = np.zeros(P, np.uint32)
    ids[:m] = ids0
    occupant = np.full(P, -1, np.int64)
    occupant[:m] = ids0
    started_at = np.zeros(P)
    started_at[:m] = time.perf_counter()
    rows: dict[int, list[dict[str, np.ndarray]]] = {int(t): [] for t in ids0}
    keys, run = comp.init(seed32, host_rows((ids, sub, np.arange(P) < m)))
    report.trials = m
    best: BestState | None = None
    boundary = 0
    while (occupant >= 0).any():
        run, packed = comp.segment(
            run, host_rows(sub), keys, data, np.int32(segment_epochs)
        )
        out = _segment_out(spec, n_folds, P, packed)
        done, bufs, flags, active = int(out.done), out.bufs, out.flags, out.active
        report.segments += 1
        for s in np.flatnonzero(occupant >= 0):
            trained = ~np.isnan(bufs["train_loss"][:done, s])
            if trained.any():
                rows[int(occupant[s])].append(
                    {k: v[:done][trained, s] for k, v in bufs.items()}
                )
        if on_segment is not None:
            report.run_time = time.perf_counter() - t_run
            on_segment(report, boundary)
        diverged, stopped, epochs_run, best_value, best_epoch = (
            np.asarray(a) for a in flags
        )
        finished = np.flatnonzero((occupant >= 0) & ~np.asarray(active))
        outcomes = []
        for s in finished:
            tid = int(occupant[s])
            parts = rows.pop(tid)
            tc = {k: np.concatenate([p[k] for p in parts], 0) for k in parts[0]}
            be = int(best_epoch[s])
            ok = be >= 0 and not diverged[s]
            outcomes.append(
                TrialOutcome(
                    trial_id=tid,
                    status="diverged"
                    if diverged[s]
                    else "stopped"
                    if stopped[s]
                    else "complete",
                    value=float(sign * best_value[s]) if ok else math.nan,
                    best_epoch=be,
                    epochs_run=int(epochs_run[s]),
                    curves=tc,
                    fold_values=tc["value_folds"][be]
                    if be >= 0
                    else np.full(n_folds, np.nan),
                    wall_time=time.perf_counter() - started_at[s],
                    bucket=report.key,
                )
            )
            top = best.value if best is not None else best_so_far
            if ok and best_value[s] > top:
                best = BestState(
                    trial_id=tid,
                    value=float(best_value[s]),
                    trainable=spec.trainable,
                    state=_fetch(_take(run.best, int(s))),
                    hp={k: np.asarray(v[s]) for k, v in sub.items()},
                )
        occupant[finished] = -1
        if outcomes:
            on_finish(outcomes, boundary)
        boundary += 1
        free = np.flatnonzero(occupant < 0)
        new_ids, new_hp = source(len(free)) if len(free) else ([], {})
        k = len(new_ids)
        if k:
            fill = np.zeros(P, bool)
            fill[free[:k]] = True
            for name, v in new_hp.items():
                sub[name] = sub[name].copy()
                sub[name][free[:k]] = v
            ids = ids.copy()
            ids[free[:k]] = new_ids
            occupant[free[:k]] = new_ids
            started_at[free[:k]] = time.perf_counter()
            for t in new_ids:
                rows[int(t)] = []
            keys, run = comp.refill(seed32, host_rows((ids, sub, fill)), keys, run)
            report.trials += k
        elif done < segment_epochs and not (occupant >= 0).any():
            break
    report.compile_time = _compile_seconds[0] - compiled_before
    report.run_time = time.perf_counter() - t_run - report.compile_time
    return report, best
