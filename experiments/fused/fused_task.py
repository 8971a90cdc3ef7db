"""The built-in MLP tasks trained with the fused Pallas step (``fused_step.py``).

``FusedMLPClassifier`` and ``FusedMLPRegressor`` are ``jaxhp.tasks.MLPClassifier`` and
``MLPRegressor`` whose buckets' Trainable, ``FusedMLPTrainable``, offers
``population_step`` (see ``jaxhp.Trainable``): the engine then calls the kernel once a
step for all members instead of vmapping ``MLPTrainable.step``. Nothing in the package
knows about the kernel; this is the way a Trainable of one's own would plug in a
population-wide step::

    import sys; sys.path.insert(0, "experiments/fused")
    from fused_task import FusedMLPClassifier

    task = FusedMLPClassifier(X, y, folds=2)  # same arguments as MLPClassifier
    jaxhp.tune(task, space, "random", n_trials=64)

A space the kernel cannot train (widths over 128, batches over 256, ...) fails in
``check_space``, before anything compiles, naming what does not fit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import fused_step
import numpy as np

from jaxhp.space import Choice, Fixed
from jaxhp.tasks.mlp import MLPClassifier, MLPRegressor, MLPTrainable, layer_widths

__all__ = ["FusedMLPClassifier", "FusedMLPRegressor", "FusedMLPTrainable", "plain"]


@dataclasses.dataclass(frozen=True)
class FusedMLPTrainable(MLPTrainable):
    """``MLPTrainable`` whose population steps with one Pallas kernel a step."""

    def population_step(self, hp, keep, *, platform: str):
        """``fused_step.population_step`` for this bucket (``jaxhp.Trainable``)."""
        return fused_step.population_step(self, hp, keep, platform=platform)

    def _low(self, params) -> Any:
        # No compute-dtype copy of the weights: the kernel reads the float32 weights
        # for the update anyway and casts them in registers, where a copy would cost
        # it a read and a write more a step.
        return None


def plain(tr: MLPTrainable) -> MLPTrainable:
    """The same bucket as a plain ``MLPTrainable`` (the vmapped step)."""
    return MLPTrainable(**{f.name: getattr(tr, f.name) for f in dataclasses.fields(tr)})


def fused(tr: MLPTrainable) -> FusedMLPTrainable:
    """The same bucket with the fused step."""
    fields = dataclasses.fields(tr)
    return FusedMLPTrainable(**{f.name: getattr(tr, f.name) for f in fields})


class _Fused:
    """Mixed into an MLP task: its buckets step with the kernel."""

    def check_space(self, space) -> None:
        super().check_space(space)

        def possible(name):
            p = space.get(name)
            if p is None:
                return [self.defaults[name]]
            if isinstance(p, Fixed):
                return [p.value]
            if isinstance(p, Choice):
                return list(p.values)
            return [p.low, p.high]

        depth = int(max(possible("n_layers")))
        fused_step.check(
            activations=possible("activation"),
            # Each layer's width by name, as layer_widths falls back to `width`.
            max_width=max(
                max(possible(n))
                for n in layer_widths({n: n for n in [*self.defaults, *space]}, depth)
            ),
            max_batch=max(possible("batch_size")),
            n_in=self.n_features,
            n_out=self.n_out,
        )

    def trainable(self, hp: Mapping[str, np.ndarray]) -> FusedMLPTrainable:
        return fused(super().trainable(hp))


class FusedMLPClassifier(_Fused, MLPClassifier):
    """``MLPClassifier`` trained with the fused step (the same arguments)."""


class FusedMLPRegressor(_Fused, MLPRegressor):
    """``MLPRegressor`` trained with the fused step (the same arguments)."""
