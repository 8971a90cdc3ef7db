"""Useful-work accounting: how much of what a population program computed was work the
trials needed.

A compiled segment computes every slot's ``S`` steps of ``B`` rows at the bucket's
padded network each epoch, whether the slot trains or not (a mask saves no FLOPs). A
trial trained alone would compute its own ``ceil(n/b)`` steps of ``b`` rows (``n`` rows
an epoch per fold) at its own width and depth. Per slot and epoch, with ``Fp`` the
padded network's FLOPs per row and ``Fo`` the trial's own, ``F`` folds and ``N`` the
training rows of all folds::

    executed = F * S * B * Fp                 (every slot, every epoch the program ran)
    useful   = N * Fo                         (a slot that trained that epoch)
    pad_shape = N * (Fp - Fo)                 (its padded width and depth)
    pad_rows  = (F * S * B - N) * Fp          (its padded rows and idle steps)
    frozen    = executed, for a slot that did not train

so ``executed = useful + pad_shape + pad_rows + frozen``. Training steps only:
validation is not counted. Where the task has no cost model (``flops_per_row`` 0) the
unit is the example-step (``Fp = Fo = 1``): padded rows and frozen slots still count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from jaxhp.engine.outcomes import BucketReport

__all__ = ["SlotCost", "add_segment", "describe", "total"]

FIELDS = ("executed", "useful", "pad_shape", "pad_rows", "frozen")


class SlotCost:
    """The per-row costs of one program's slots: the padded network's (``padded``) and
    each slot's trial's own (``own``, ``[size]``, set as trials start)."""

    def __init__(self, task: Any, spec: Any, size: int):
        fp = float(task.flops_per_row(spec.trainable))
        self.unit = "flop" if fp > 0 else "example-step"
        self.padded = fp if fp > 0 else 1.0
        self.task, self.trainable = task, spec.trainable
        self.own = np.full(size, self.padded)
        n_train = np.asarray(task.data.n_train)
        self.rows = float(n_train.sum())  # N: an epoch's rows, every fold
        self.member_rows = float(len(n_train) * spec.steps * spec.batch)  # F * S * B

    def set(self, slots: np.ndarray, hp: Mapping[str, np.ndarray]) -> None:
        if self.unit == "flop":
            own = self.task.trial_flops_per_row(self.trainable, hp)
            self.own[slots] = np.minimum(np.asarray(own, float), self.padded)

    def take(self, src: np.ndarray) -> SlotCost:
        out = object.__new__(SlotCost)
        out.__dict__.update(self.__dict__)
        out.own = self.own[src].copy()
        return out


def add_segment(
    report: BucketReport, cost: SlotCost, trained: np.ndarray, epochs: int
) -> None:
    """Count a segment that ran ``epochs`` epochs (what the program computed), in which
    ``trained`` (``[epochs_with_rows, size]`` bool) says which slot trained when."""
    size = trained.shape[1]
    slot_epoch = cost.member_rows * cost.padded
    executed = epochs * size * slot_epoch
    n_trained = trained.sum(0)  # [size] epochs each slot trained
    useful = float(n_trained @ cost.own) * cost.rows
    pad_shape = float(n_trained @ (cost.padded - cost.own)) * cost.rows
    total_trained = float(n_trained.sum())
    pad_rows = total_trained * (cost.member_rows - cost.rows) * cost.padded
    report.executed += executed
    report.useful += useful
    report.pad_shape += pad_shape
    report.pad_rows += pad_rows
    report.frozen += executed - total_trained * slot_epoch
    report.unit = cost.unit


def total(reports: Iterable[BucketReport]) -> dict[str, Any]:
    """The sweep's work: each field summed, compile seconds, and ``ratio``, executed
    per useful (1.0: nothing wasted)."""
    reports = list(reports)
    out: dict[str, Any] = {
        f: float(sum(getattr(r, f) for r in reports)) for f in FIELDS
    }
    units = {r.unit for r in reports if r.executed > 0}
    out["unit"] = units.pop() if len(units) == 1 else "mixed" if units else "flop"
    out["compile_s"] = float(sum(r.compile_time for r in reports))
    out["ratio"] = out["executed"] / out["useful"] if out["useful"] > 0 else None
    return out


def describe(work: Mapping[str, Any] | None) -> str:
    """One line: executed per useful work and where the rest went."""
    if not work or not work.get("executed"):
        return "work: none recorded"
    ex = work["executed"]

    def pct(name):
        return f"{100 * work[name] / ex:.0f}%"

    scale = "GFLOP" if work["unit"] == "flop" else "M example-steps"
    div = 1e9 if work["unit"] == "flop" else 1e6
    ratio = work["ratio"]
    return (
        f"work: {ex / div:.4g} {scale} executed, "
        f"{(ratio or float('nan')):.2f}x the useful; padding {pct('pad_shape')} "
        f"shape + {pct('pad_rows')} rows, frozen slots {pct('frozen')}; "
        f"{work['compile_s']:.1f}s compiling"
    )
