"""Per-platform engine options: one frozen value, resolved once per platform.

Each option picks between two ways of computing the same trials, bit for bit (tests run
both); which is faster depends on the platform, so the defaults are per platform and the
value travels explicitly with every compiled program (it is part of the compile-cache
key). Override one with ``EngineOptions.for_platform("cpu", freeze_in_step=True)``.
The measurements behind each default are in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["CostModel", "EngineOptions", "ProgramOptions"]


class ProgramOptions(NamedTuple):
    """The options a compiled segment depends on: part of its compile-cache key, so
    that changing another option (chunking, transfers, storage) recompiles nothing."""

    platform: str = "cpu"
    preshuffle_bytes: int = 0
    freeze_in_step: bool = False
    compiler_options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CostModel:
    """Rough constants of a platform, used only to decide whether merging two buckets
    (one compile fewer, more padding) pays: seconds to compile a bucket's programs,
    fixed seconds per optimizer step, sustained training FLOP/s."""

    compile_s: float
    step_s: float
    flops: float


_COSTS = {
    "cpu": CostModel(compile_s=6.0, step_s=2e-5, flops=3e10),
    "gpu": CostModel(compile_s=4.0, step_s=1e-5, flops=2e13),
    "tpu": CostModel(compile_s=4.0, step_s=1e-5, flops=5e13),
}


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs on one platform. Every choice gives the same trials.

    Attributes:
        platform: ``"cpu"``, ``"gpu"``, ``"tpu"``...
        preshuffle_bytes: bytes the per-epoch shuffled copies of the training data may
            take (all trials and folds of a bucket) before batches are gathered through
            the permutation instead. A copy lets a step slice its batch (fewer kernels
            per step on an accelerator); on a CPU the gather copies element by element
            either way, so the copy is pure cost there.
        static_epoch_loop: without a stopper, run a segment's epochs as a loop of a
            fixed count instead of a ``while_loop`` that ends once every trial is
            inactive. An accelerator reads a while loop's condition back to the host
            after every epoch; a fixed count lets the host queue the whole segment.
        freeze_in_step: keep a trial that is not training as it is in every step
            (``where(live, new, old)``, which XLA fuses into the optimizer update on an
            accelerator) rather than once at the epoch's end (which keeps a copy of the
            state alive through the step loop, but on a CPU does not fuse).
        hp_device_put: put a round's hyperparameters on the device once, shared by
            every program call, instead of handing NumPy arrays to each call (whose own
            transfer is cheaper for small populations).
        pack_host_rows: pack a call's per-trial host arrays into one ``uint32`` matrix:
            one transfer per call rather than one per leaf (the count, not the bytes, is
            the cost).
        compiler_options: extra XLA options for the segment program, as sorted
            ``(name, value)`` pairs (e.g. CUDA graphs for small populations).
        cpu_chunk_bytes_per_core: on a CPU a bucket trains in chunks whose run state
            totals about this per usable core (two cores' worth at least), so a chunk's
            weights stay in the caches instead of streaming through memory every step.
            ``None``: no cache chunking (accelerators want the whole population).
        cpu_min_members: the least members (trial x fold) a CPU chunk holds, so each op
            still amortises its overhead.
        cost: the bucket planner's cost model (:class:`CostModel`).
        commit_in_background: commit a stored round on a writer thread while the
            next one trains (the device would idle while the host writes). Not on a
            CPU, where training and writing share the cores and the GIL.
    """

    platform: str = "cpu"
    preshuffle_bytes: int = 0
    static_epoch_loop: bool = False
    freeze_in_step: bool = False
    hp_device_put: bool = False
    pack_host_rows: bool = True
    compiler_options: tuple[tuple[str, str], ...] = ()
    cpu_chunk_bytes_per_core: int | None = 1 << 20
    cpu_min_members: int = 4
    cost: CostModel = _COSTS["cpu"]
    commit_in_background: bool = False

    @classmethod
    def for_platform(cls, platform: str, **overrides: Any) -> EngineOptions:
        """The defaults for ``platform``, with ``overrides`` (field names) applied."""
        if platform == "cpu":
            base = cls()
        else:
            base = cls(
                platform=platform,
                preshuffle_bytes=256 * 2**20,
                static_epoch_loop=True,
                freeze_in_step=True,
                cpu_chunk_bytes_per_core=None,
                cost=_COSTS.get(platform, _COSTS["gpu"]),
                commit_in_background=True,
            )
        if "compiler_options" in overrides:
            overrides["compiler_options"] = _sorted_pairs(overrides["compiler_options"])
        return dataclasses.replace(base, **overrides)

    @property
    def program(self) -> ProgramOptions:
        """What of these options the compiled segment depends on."""
        return ProgramOptions(
            self.platform,
            self.preshuffle_bytes,
            self.freeze_in_step,
            self.compiler_options,
        )

    def replace(self, **changes: Any) -> EngineOptions:
        return dataclasses.replace(self, **changes)


def _sorted_pairs(options: Mapping[str, str] | tuple) -> tuple[tuple[str, str], ...]:
    items = options.items() if isinstance(options, Mapping) else options
    return tuple(sorted((str(k), str(v)) for k, v in items))
