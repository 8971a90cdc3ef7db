"""The public population program: a bucket's compiled programs and its device state.

A :class:`Population` holds ``size`` slots, each training one trial (or empty). It is
the one way the engine trains anything: the plain round (start, train segments until
every slot is done), the recycled stream (refill slots as they free) and PBT (copy
slots' states between segments and change their hyperparameters) are short loops over
it, and so can a schedule of your own be (``examples/successive_halving.py``)::

    pop = Population(task, hp, size=8, seed=0, segment_epochs=2)
    pop.start(ids, hp)
    while pop.active.any():
        pop.train()
        ...  # read pop.current(), pop.outcomes(slots); pop.stop(slots); pop.refill(...)

Every method keeps the engine's invariant: a trial's result depends only on its id,
its hyperparameters and the seed, not on its slot, its slot-mates or when it started.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhp import stopping
from jaxhp.engine.data import device_data
from jaxhp.engine.options import EngineOptions
from jaxhp.engine.outcomes import BucketReport, Outcomes, outcomes_of
from jaxhp.engine.planning import bucket_spec, pop_size
from jaxhp.engine.programs import DEFAULT_CACHE, CompileClock, ProgramCache
from jaxhp.engine.segment import flags_of
from jaxhp.engine.transfer import fetch, host_rows, unpack
from jaxhp.engine.work import SlotCost, add_segment
from jaxhp.trainable import capabilities

__all__ = ["Population", "resolve_devices"]


def resolve_devices(devices: Sequence[Any] | None) -> list:
    """The devices to shard over: every device of every process by default (several
    hosts: each contributes its own)."""
    if devices is None:
        devices = jax.devices() if jax.process_count() > 1 else jax.local_devices()
    return list(devices)


class Population:
    """``size`` slots of one compiled program, trained a segment at a time.

    Args:
        task: the task (data, metric, the Trainable of a bucket).
        hp: hyperparameters (``{name: [n]}``, from ``task.hparams``) spanning the trials
            this program must fit: its shapes (width, depth, the largest and smallest
            batch size) come from them.
        size: trials trained at once (padded to a power of two and a multiple of the
            device count).
        seed: trial ``i``'s key is ``fold_in(key(seed), i)``.
        stopper: a stopper (``jaxhp.stopping``) applied inside the program, or None.
        segment_epochs: epochs a :meth:`train` call runs at most (one compiled loop).
        eval_every: validate every this many epochs and at each trial's last.
        devices: devices to shard the slots over (default: every local device).
        options: the platform's :class:`EngineOptions` (default: the devices').
        cache: the :class:`ProgramCache` to take programs from (default: the
            process's).
        label: the bucket's name in reports.
    """

    def __init__(
        self,
        task: Any,
        hp: Mapping[str, np.ndarray],
        *,
        size: int,
        seed: int,
        stopper: Any = None,
        segment_epochs: int = 10,
        eval_every: int = 1,
        devices: Sequence[Any] | None = None,
        options: EngineOptions | None = None,
        cache: ProgramCache | None = None,
        label: str | None = None,
    ):
        devices = resolve_devices(devices)
        self.n_dev = len(devices)
        self.options = options or EngineOptions.for_platform(devices[0].platform)
        self.cache = DEFAULT_CACHE if cache is None else cache
        self.task, self.seed = task, seed
        self.n_folds = task.data.n_folds
        hp = {k: np.asarray(v) for k, v in hp.items()}
        self.shape, spec = bucket_spec(
            task, hp, segment_epochs, stopper, self.options, eval_every
        )
        self.sharding = None
        if self.n_dev > 1:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            mesh = Mesh(np.asarray(devices), ("pop",))
            self.sharding = NamedSharding(mesh, PartitionSpec("pop"))
            self.data = device_data(task, NamedSharding(mesh, PartitionSpec()))
            if capabilities(spec.trainable).population_step is not None:
                spec = dataclasses.replace(spec, mesh=mesh)
        else:
            self.data = device_data(task, device=devices[0])
        self.spec = spec
        self.programs = self.cache.get(spec, self.n_folds)
        self.size = pop_size(size, self.n_dev)
        self.label = label or _label(spec, self.size)
        self.report = BucketReport(
            self.label, 0, self.size, spec.batch, spec.steps, 0, 0.0, 0.0
        )
        self.report.devices = self.n_dev
        self.cost = SlotCost(task, spec, self.size)
        self._seed32 = np.uint32(seed % 2**32)
        self.slots = np.full(self.size, -1, np.int64)  # trial id per slot, -1: empty
        self._hp: dict[str, np.ndarray] = {}
        self._ids = np.zeros(self.size, np.uint32)
        self._since = np.zeros(self.size, np.int64)  # the segment each trial began
        self._started = np.zeros(self.size)  # and when
        self._segs: list[dict[str, np.ndarray]] = []  # per-epoch rows of each segment
        self._seg0 = 0  # the index of self._segs[0] among all segments
        self.run = self.keys = None
        self._flags = self._best1 = None
        self._active = np.zeros(self.size, bool)

    # -- filling slots -----------------------------------------------------------------
    def start(self, trial_ids: Sequence[int], hp: Mapping[str, np.ndarray]) -> None:
        """Start trials ``trial_ids`` (hyperparameters ``{name: [m]}``, ``m <= size``)
        in slots ``0..m-1``; the other slots stay empty."""
        ids = np.asarray(trial_ids, np.int64)
        m = len(ids)
        if not 0 < m <= self.size:
            raise ValueError(f"start: {m} trials for a population of {self.size}")
        pad = self.size - m
        self._hp = {
            k: np.concatenate([np.asarray(v)[:m], np.repeat(np.asarray(v)[:1], pad)])
            for k, v in hp.items()
        }
        self._ids = np.zeros(self.size, np.uint32)
        self._ids[:m] = ids
        live = np.arange(self.size) < m
        self._hp_rows = None
        self.cache.seen.add(self.shape.key + (self.size,))
        self.keys, self.run = self._call(
            self.programs.init, self._seed32, self._rows(live)
        )
        self.cost.set(np.arange(m), {k: np.asarray(v)[:m] for k, v in hp.items()})
        self._occupy(np.arange(m), ids)

    def refill(
        self, slots: Sequence[int], trial_ids: Sequence[int], hp: Mapping[str, Any]
    ) -> None:
        """Start trials ``trial_ids`` in ``slots`` (fresh keys, weights, optimizer and
        stopper state); every other slot keeps its state bit for bit. Compiles once."""
        slots = np.asarray(slots, np.int64)
        if len(slots) == 0:
            return
        if (self.slots[slots] >= 0).any() and self._active[slots].any():
            raise ValueError("refill: a slot still holds a training trial; stop it")
        for name, v in hp.items():
            self._hp[name] = self._hp[name].copy()
            self._hp[name][slots] = v
        self._ids = self._ids.copy()
        self._ids[slots] = trial_ids
        fill = np.zeros(self.size, bool)
        fill[slots] = True
        self._hp_rows = None
        self.keys, self.run = self._call(
            self.programs.refill, self._seed32, self._rows(fill), self.keys, self.run
        )
        self.cost.set(slots, {k: np.asarray(v) for k, v in hp.items()})
        self._occupy(slots, np.asarray(trial_ids, np.int64))

    def _occupy(self, slots: np.ndarray, ids: np.ndarray) -> None:
        self.slots[slots] = ids
        self._since[slots] = self._seg0 + len(self._segs)
        self._started[slots] = time.perf_counter()
        self._active[slots] = True
        self.report.trials += len(slots)

    def release(self, slots: Sequence[int]) -> None:
        """Empty ``slots`` (their trials are done and read): they stop costing host
        work, and :meth:`refill` may use them."""
        self.slots[np.asarray(slots, np.int64)] = -1
        self._forget()

    # -- training ----------------------------------------------------------------------
    def train(self, epochs: int | None = None) -> int:
        """Train every active slot for up to ``epochs`` epochs (default and at most
        ``segment_epochs``); returns the epochs run (fewer once every slot is done)."""
        spec = self.spec
        n = spec.seg_epochs if epochs is None else int(epochs)
        if not 0 < n <= spec.seg_epochs:
            raise ValueError(
                f"train: epochs must be in [1, {spec.seg_epochs}], got {n}"
            )
        # A fixed-count loop would run a short segment's missing epochs masked, for
        # nothing: a short segment takes the while loop's program.
        progs = self.programs
        ran = n  # epochs the program computes, trained or not
        if spec.static_epochs and n < spec.seg_epochs:
            short = dataclasses.replace(spec, static_epochs=False)
            progs = self.cache.get(short, self.n_folds)
        if not progs.spec.static_epochs:
            ran = None  # the while loop ends once no slot trains: `done`
        self.run, packed = self._call(
            progs.segment,
            self.run,
            self._hp_device(),
            self.keys,
            self.data,
            np.int32(n),
        )
        t0 = time.perf_counter()
        out = unpack(progs.layouts, (self.n_folds, self.size), packed)
        self.report.run_time += time.perf_counter() - t0
        done = int(out.done)
        self._segs.append({k: v[:done] for k, v in out.bufs.items()})
        trained = ~np.isnan(self._segs[-1]["train_loss"])
        add_segment(self.report, self.cost, trained, done if ran is None else ran)
        self._flags, self._active = out.flags, np.asarray(out.active).copy()
        self._best1 = out.best1
        self.report.segments += 1
        return done

    @property
    def active(self) -> np.ndarray:
        """``[size]`` bool: slots whose trial is still training."""
        return self._active & (self.slots >= 0)

    def finished(self) -> np.ndarray:
        """Slots holding a trial that no longer trains (epochs done, stopped, diverged),
        not yet released."""
        return np.flatnonzero((self.slots >= 0) & ~self._active)

    def last_rows(self) -> dict[str, np.ndarray]:
        """The last segment's per-epoch rows, ``{name: [epochs, size, ...]}``: every
        slot's ``train_loss``, ``value`` (the metric), ``value_folds`` and other
        metrics, NaN where a slot did not train or validate."""
        return self._segs[-1] if self._segs else {}

    def current(self, name: str = "value") -> np.ndarray:
        """``[size]``: each slot's last validated ``name`` (the metric by default) in
        the last segment (NaN where none)."""
        seg = self._segs[-1] if self._segs else {}
        if name not in seg or len(seg[name]) == 0:
            return np.full(self.size, np.nan)
        v = seg[name]
        last = np.where(np.isnan(v), -1, np.arange(len(v))[:, None]).max(0)
        return np.where(last >= 0, v[np.maximum(last, 0), np.arange(self.size)], np.nan)

    def stop(self, slots: Sequence[int]) -> None:
        """Stop the trials in ``slots`` now (status ``stopped``), keeping their state
        and best epoch: a schedule's own pruning decision."""
        mask = np.zeros(self.size, bool)
        mask[np.asarray(slots, np.int64)] = True
        self.run = self._call(_stop_program, self.run, mask)
        self._flags = None
        self._active &= ~mask

    # -- compaction --------------------------------------------------------------------
    def compaction_gain(self) -> float:
        """Seconds the cost model expects :meth:`compacted` to save over the rest of the
        training slots' budgets (negative: not worth a compile). Only under a per-trial
        stopper: a stopper comparing slot-mates would compare fewer after it."""
        keep = np.flatnonzero(self.active)
        if not len(keep) or not stopping.is_per_trial(self.spec.stopper):
            return -math.inf
        size = pop_size(len(keep), self.n_dev)
        if size >= self.size:
            return -math.inf
        c = self.options.cost
        flags = self.flags()
        left = int((self._hp["epochs"][keep] - flags[2][keep]).max())
        slot_epoch = self.cost.member_rows * self.cost.padded  # F * S * B * Fp
        if self.cost.unit != "flop":
            return -math.inf  # no FLOP model: nothing to weigh a compile against
        saved = left * (self.size - size) * slot_epoch / c.flops
        compiled = self.shape.key + (size,) in self.cache.seen
        return saved - (0.0 if compiled else c.compile_s)

    def compacted(self) -> Population:
        """A population of the next power of two of slots at least the training trials
        (its own program size: programs are reused across buckets), holding those trials
        with their whole state, keys, hyperparameters and curves so far: each trains on
        as it would have here. Finished trials stay in this population (read their
        outcomes first); frozen slots stop costing. Per-trial stoppers only."""
        if not stopping.is_per_trial(self.spec.stopper):
            raise ValueError("compacted: the stopper compares slot-mates")
        keep = np.flatnonzero(self.active)
        size = pop_size(len(keep), self.n_dev)
        src = np.concatenate([keep, np.full(size - len(keep), keep[0])])
        live = np.arange(size) < len(keep)
        new = object.__new__(Population)
        new.__dict__.update(self.__dict__)  # spec, programs, data, report, ...
        new.size = size
        new.keys, new.run = self._call(_compact_program, self.keys, self.run, src, live)
        if self.sharding is not None:
            new.keys, new.run = jax.device_put((new.keys, new.run), self.sharding)
        new.slots = np.where(live, self.slots[src], -1)
        new._hp = {k: v[src] for k, v in self._hp.items()}
        new._hp_rows = None
        new._ids = self._ids[src]
        new._since, new._started = self._since[src], self._started[src]
        new._segs = [{k: v[:, src] for k, v in seg.items()} for seg in self._segs]
        new._active = self._active[src] & live
        new._flags = new._best1 = None
        new.cost = self.cost.take(src)
        new.cache.seen.add(self.shape.key + (size,))
        self.report.sizes = (*(self.report.sizes or (self.size,)), size)
        return new

    # -- PBT ---------------------------------------------------------------------------
    def copy_slots(self, src: Sequence[int]) -> None:
        """Slot ``i`` takes slot ``src[i]``'s whole state (weights, optimizer state,
        best-so-far record): exploitation in population-based training. Keys and
        hyperparameters stay the slot's own (:meth:`set_hp` changes those)."""
        self.run = self.programs.gather(self.run, np.asarray(src))
        self._flags = None

    def set_hp(self, hp: Mapping[str, np.ndarray]) -> None:
        """New hyperparameters for every slot (``{name: [size]}``) from the next
        segment on: shapes must stay the bucket's (no recompile)."""
        self._hp = {k: np.asarray(v) for k, v in hp.items()}
        self._hp_rows = None

    # -- reading -----------------------------------------------------------------------
    def hp(self, slot: int) -> dict[str, np.ndarray]:
        """Slot ``slot``'s hyperparameters as 0-d arrays."""
        return {k: np.asarray(v[slot]) for k, v in self._hp.items()}

    def flags(self) -> tuple:
        """``(diverged, stopped, epochs_run, best_value, best_epoch)``, each ``[size]``
        (``best_value`` oriented: higher is better)."""
        if self._flags is None:
            self._flags = fetch(flags_of(self.run))
        return tuple(np.asarray(a) for a in self._flags)

    def outcomes(self, slots: Sequence[int] | None = None) -> Outcomes:
        """The outcomes of the trials in ``slots`` (default: every occupied slot), in
        that order: status, best value and epoch, curves since each trial started."""
        slots = (
            np.flatnonzero(self.slots >= 0)
            if slots is None
            else np.asarray(slots, np.int64)
        )
        flags, now = self.flags(), time.perf_counter()
        parts, order = [], []
        for since in np.unique(self._since[slots]):
            group = slots[self._since[slots] == since]
            segs = self._segs[since - self._seg0 :]
            curves = [{k: v[:, group] for k, v in seg.items()} for seg in segs]
            out, _ = outcomes_of(
                self.spec.sign,
                tuple(a[group] for a in flags),
                curves,
                self.slots[group],
                now - self._started[group],
                self.label,
            )
            parts.append(out)
            order.append(group)
        if not parts:
            return Outcomes.empty()
        out = Outcomes.concat(parts)
        if len(parts) > 1:  # back in the order of `slots`
            pos = {int(s): i for i, s in enumerate(np.concatenate(order))}
            out = out.take(np.asarray([pos[int(s)] for s in slots]))
        return out

    def best(self, slots: Sequence[int] | None = None) -> tuple[float, int] | None:
        """``(oriented value, slot)`` of the best trial among ``slots`` (default: all
        occupied), or None when none has a finite validated epoch."""
        slots = (
            np.flatnonzero(self.slots >= 0)
            if slots is None
            else np.asarray(slots, np.int64)
        )
        if len(slots) == 0:
            return None
        diverged, _, _, best_value, best_epoch = self.flags()
        cand = np.where(~diverged & (best_epoch >= 0), best_value, -np.inf)[slots]
        j = int(np.argmax(cand))
        return (float(cand[j]), int(slots[j])) if np.isfinite(cand[j]) else None

    def best_state(self, slot: int) -> Any:
        """A host copy of slot ``slot``'s best-epoch state (what the Trainable keeps),
        ``[F, ...]``."""
        if self.size == 1 and self._best1 is not None:
            return jax.tree.map(lambda a: np.asarray(a)[0], self._best1)
        return fetch(self.programs.gather(self.run.best, np.int32(slot)))

    # -- internals ---------------------------------------------------------------------
    def _rows(self, live: np.ndarray) -> Any:
        rows = host_rows((self._ids, self._hp, live), self.options.pack_host_rows)
        if self.sharding is not None:
            rows = jax.device_put(rows, self.sharding)
        return rows

    def _hp_device(self) -> Any:
        if self._hp_rows is None:
            rows = host_rows(self._hp, self.options.pack_host_rows)
            if self.sharding is not None:  # the slots split over the devices
                rows = jax.device_put(rows, self.sharding)
            elif self.options.hp_device_put:
                rows = jax.device_put(rows, next(iter(self.data.x_train.devices())))
            self._hp_rows = rows  # else NumPy: each call takes it as it is
        return self._hp_rows

    def _call(self, program, *args):
        c0, t0 = CompileClock.seconds, time.perf_counter()
        out = program(*args)
        compiled = CompileClock.seconds - c0
        self.report.compile_time += compiled
        self.report.run_time += time.perf_counter() - t0 - compiled
        return out

    def _forget(self) -> None:
        """Drop the rows of segments that no occupied slot's trial trained in."""
        live = self._since[self.slots >= 0]
        first = int(live.min()) if len(live) else self._seg0 + len(self._segs)
        drop = first - self._seg0
        if drop > 0:
            del self._segs[:drop]
            self._seg0 = first


@jax.jit
def _compact_program(keys, run, src, live):
    keys, run = jax.tree.map(lambda a: a[src], (keys, run))
    return keys, run._replace(active=run.active & live)


@jax.jit
def _stop_program(run, mask):
    stop = jnp.asarray(mask) & run.active
    return run._replace(active=run.active & ~stop, stopped=run.stopped | stop)


def _label(spec, size: int) -> str:
    """A bucket's name: the MLP's depth and width, or a Trainable dataclass's static
    fields, then the padded batch, steps per epoch and population."""
    tr = spec.trainable
    if hasattr(tr, "depth") and hasattr(tr, "width"):
        dims = f"D{tr.depth} W{tr.width}"
    elif dataclasses.is_dataclass(tr):
        dims = " ".join(
            f"{f.name}={getattr(tr, f.name)}"
            for f in dataclasses.fields(tr)
            if isinstance(getattr(tr, f.name), (int, str))
        )
    else:
        dims = ""
    return f"{dims} B{spec.batch} S{spec.steps} P{size}".strip()
