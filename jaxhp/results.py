"""Trial records and the Results of a sweep: best trial, table, curves, trained model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Model", "Results", "Trial", "STATUSES"]

#: complete: trained its full epoch budget; stopped: stopped early by the stopper (its
#: value is its best epoch's); diverged: its loss became NaN/Inf (value NaN, never best);
#: failed: a black-box objective (``optimize``) returned a non-finite value.
STATUSES = ("complete", "stopped", "diverged", "failed")


@dataclass(frozen=True)
class Trial:
    """One finished trial (immutable, like Optuna's ``FrozenTrial``)."""

    trial_id: int
    params: dict[str, Any]
    value: float
    status: str
    epochs_run: int
    best_epoch: int
    wall_time: float
    round: int
    fold_values: tuple[float, ...]
    curves: dict[str, np.ndarray] = field(repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status in ("complete", "stopped") and math.isfinite(self.value)


class Model:
    """The best trial's trained weights (one model per fold) with ``predict``.

    With k-fold cross-validation the k fold models form an ensemble: ``predict`` averages
    their probabilities (classifier) or outputs (regressor).
    """

    def __init__(self, task: Any, best: Any):
        self.trainable = best.trainable
        self.state = best.state  # [F, ...]
        self.hp = best.hp
        self.trial_id = best.trial_id
        self._x_mean = task.data.x_mean
        self._x_std = task.data.x_std
        self._aux = task.data.aux
        self._kind = getattr(task, "kind", None)
        self._classes = getattr(task, "classes_", None)
        self._y_ndim = getattr(task, "y_ndim", 1)
        self._build()

    @property
    def kind(self) -> str | None:
        """``"classifier"``, ``"regressor"``, or None for a user's own Trainable."""
        return self._kind

    @property
    def classes(self) -> np.ndarray | None:
        """A classifier's labels, in the order of ``predict_proba``'s columns."""
        return self._classes

    def _build(self) -> None:
        if not hasattr(self.trainable, "predict"):
            self._forward = None
            return
        hp = {k: jnp.asarray(v) for k, v in self.hp.items()}
        self._forward = jax.jit(
            jax.vmap(lambda s, x: self.trainable.predict(s, x, hp), in_axes=(0, 0))
        )

    # Pickling (the study storage keeps the best model): everything but the jitted
    # function, which is rebuilt on load.
    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("_forward", None)
        d["state"] = jax.device_get(d["state"])
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._build()

    def _outputs(self, X: Any) -> np.ndarray:
        if self._forward is None:
            raise TypeError("this task's Trainable has no predict(state, x, hp) method")
        X = np.asarray(X, np.float32)
        if X.shape[1:] != self._x_mean.shape[1:]:
            raise ValueError(
                f"X rows have shape {X.shape[1:]}, expected {self._x_mean.shape[1:]}"
            )
        xs = (X[None] - self._x_mean[:, None]) / self._x_std[:, None]  # [F, N, ...]
        return np.asarray(self._forward(self.state, jnp.asarray(xs)))  # [F, N, out]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[N, C]``, averaged over the fold models."""
        if self._kind != "classifier":
            raise TypeError("predict_proba is for classifiers")
        return np.asarray(jax.nn.softmax(self._outputs(X), -1).mean(0))

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for rows ``X`` (class labels, or values in the original units)."""
        if self._kind == "classifier":
            return self._classes[self.predict_proba(X).argmax(-1)]
        out = self._outputs(X)
        if self._kind == "regressor":
            out = out * self._aux["y_std"][:, None] + self._aux["y_mean"][:, None]
            out = out.mean(0)
            return out[:, 0] if self._y_ndim == 1 else out
        return out.mean(0)


class Results:
    """The outcome of :func:`jaxhp.tune`: every trial, the best one and its model."""

    def __init__(
        self,
        trials: Sequence[Trial],
        *,
        metric: str,
        direction: str,
        model: Model | None = None,
        stats: dict[str, Any] | None = None,
        space: Any = None,
    ):
        self.trials = sorted(trials, key=lambda t: t.trial_id)
        self.space = space  # the jaxhp.Space searched (None when unknown)
        self.metric = metric
        self.direction = direction
        self.model = model
        self.stats = dict(stats or {})

    def __len__(self) -> int:
        return len(self.trials)

    def __repr__(self) -> str:
        best = f"{self.best_value:.4g}" if self.best_trial else "none"
        return f"Results({len(self.trials)} trials, best {self.metric}={best})"

    @property
    def best_trial(self) -> Trial | None:
        ok = [t for t in self.trials if t.ok]
        if not ok:
            return None
        pick = max if self.direction == "maximize" else min
        return pick(
            ok,
            key=lambda t: (
                (t.value, -t.trial_id)
                if self.direction == "maximize"
                else (t.value, t.trial_id)
            ),
        )

    def _best(self) -> Trial:
        t = self.best_trial
        if t is None:
            raise ValueError("no trial finished with a finite metric (all diverged?)")
        return t

    @property
    def best_params(self) -> dict[str, Any]:
        """The best trial's hyperparameters as plain Python values."""
        return dict(self._best().params)

    @property
    def best_value(self) -> float:
        """The best trial's validation metric (at its best epoch, mean over folds)."""
        return self._best().value

    def predict(self, X: Any) -> np.ndarray:
        """Predict with the best trial's weights (see :class:`Model`)."""
        if self.model is None:
            raise ValueError("no trained model was kept (no trial finished)")
        return self.model.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """A classifier's class probabilities ``[N, C]`` with the best trial's weights
        (columns in the order of the sorted labels; a fold ensemble's mean)."""
        if self.model is None:
            raise ValueError("no trained model was kept (no trial finished)")
        return self.model.predict_proba(X)

    def curves(self, trial_id: int) -> dict[str, np.ndarray]:
        """Per-epoch learning curves of a trial: train_loss, the metric, per-fold values."""
        for t in self.trials:
            if t.trial_id == trial_id:
                return {
                    self.metric
                    if k == "value"
                    else f"{self.metric}_folds"
                    if k == "value_folds"
                    else k: v
                    for k, v in t.curves.items()
                }
        raise KeyError(f"no trial {trial_id}")

    def param_names(self) -> list[str]:
        """Every hyperparameter a trial has, in the space's order. A conditional one
        (``when=``) is missing from the params of the trials it does not matter to."""
        seen = dict.fromkeys(n for t in self.trials for n in t.params)
        order = [n for n in (self.space or ()) if n in seen]
        return order + [n for n in seen if n not in order]

    def records(self) -> list[dict[str, Any]]:
        """One flat dict per trial (what ``to_pandas`` and the table show); a
        hyperparameter that a trial does not use is ``None``."""
        names = self.param_names()
        rows = []
        for t in self.trials:
            rows.append(
                {
                    "trial_id": t.trial_id,
                    **{n: t.params.get(n) for n in names},
                    self.metric: t.value,
                    "status": t.status,
                    "epochs_run": t.epochs_run,
                    "best_epoch": t.best_epoch,
                    "wall_time": t.wall_time,
                    "round": t.round,
                }
            )
        return rows

    def to_pandas(self):
        """A ``pandas.DataFrame`` with one row per trial (needs pandas installed)."""
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas() needs pandas: pip install pandas") from None
        return pd.DataFrame.from_records(self.records()).set_index("trial_id")

    def table(self, top: int | None = 10) -> str:
        """A plain-text table of the best ``top`` trials (all when ``None``)."""
        ok = sorted(
            (t for t in self.trials if t.ok),
            key=lambda t: t.value,
            reverse=self.direction == "maximize",
        )
        rest = [t for t in self.trials if not t.ok]
        shown = (ok + rest)[:top] if top else ok + rest
        if not shown:
            return "(no trials)"
        names = self.param_names()
        head = ["trial", *names, self.metric, "status", "epochs_run"]
        rows = [
            [
                str(t.trial_id),
                *(_fmt(t.params.get(n)) for n in names),
                _fmt(t.value),
                t.status,
                str(t.epochs_run),
            ]
            for t in shown
        ]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        line = "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=False))
        body = [
            "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=False)) for r in rows
        ]
        return "\n".join([line, "-" * len(line), *body])

    def summary(self) -> dict[str, int]:
        """Trial counts by status."""
        out = {s: 0 for s in STATUSES}
        for t in self.trials:
            out[t.status] = out.get(t.status, 0) + 1
        return out


def _fmt(v: Any) -> str:
    if v is None:  # a hyperparameter the trial does not use
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if (abs(v) >= 1e-3 or v == 0) else f"{v:.2e}"
    return str(v)
