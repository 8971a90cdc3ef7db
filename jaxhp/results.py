"""Trial records and the Results of a sweep: best trial, table, curves, trained model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhp.trainable import capabilities

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

    A model read from a study (:meth:`from_record`) holds its weights as arrays and its
    Trainable as an import path and fields; the Trainable is imported and rebuilt only
    when ``trainable``, ``state`` or a prediction is asked for (or given as
    ``trainable=`` to :func:`jaxhp.load`).
    """

    def __init__(self, task: Any, best: Any):
        self._trainable = best.trainable
        self._state = best.state  # [F, ...]
        self._stored = None  # (Trainable record, state leaves) of a loaded model
        self.hp = best.hp
        self.trial_id = best.trial_id
        self._x_mean = task.data.x_mean
        self._x_std = task.data.x_std
        self._aux = task.data.aux
        self._kind = getattr(task, "kind", None)
        self._classes = getattr(task, "classes_", None)
        self._y_ndim = getattr(task, "y_ndim", 1)
        self._forward = None

    @property
    def kind(self) -> str | None:
        """``"classifier"``, ``"regressor"``, or None for a user's own Trainable."""
        return self._kind

    @property
    def classes(self) -> np.ndarray | None:
        """A classifier's labels, in the order of ``predict_proba``'s columns."""
        return self._classes

    @property
    def trainable(self) -> Any:
        """The trial's Trainable (a stored one is imported and rebuilt here)."""
        if self._trainable is None and self._stored is not None:
            self._trainable = build_trainable(
                self._stored[0],
                self._stored_arrays,
                cls=getattr(self, "_trainable_cls", None),
            )
        return self._trainable

    @property
    def state(self) -> Any:
        """The trial's kept state, ``[F, ...]`` (a stored one is put back into the
        Trainable's own pytree structure here)."""
        if self._state is None and self._stored is not None:
            self._state = _restore_state(
                self.trainable, self._stored[1], self._stored_arrays, self.hp
            )
        return self._state

    @property
    def trainable_name(self) -> str:
        """``module:QualName`` of the Trainable (without importing it)."""
        if self._stored is not None:
            return self._stored[0].get("import", "?")
        return _qualname(type(self._trainable))

    def _get_forward(self):
        if self._forward is None:
            predict = capabilities(self.trainable).predict
            if predict is None:
                raise TypeError(
                    "this task's Trainable has no predict(state, x, hp) method"
                )
            hp = {k: jnp.asarray(v) for k, v in self.hp.items()}
            self._forward = jax.jit(
                jax.vmap(lambda s, x: predict(s, x, hp), in_axes=(0, 0))
            )
        return self._forward

    # Old studies pickled this object; ``jaxhp migrate --trust`` reads those pickles.
    def __setstate__(self, d: dict[str, Any]) -> None:
        d = dict(d)
        self._trainable = d.pop("trainable", None)
        self._state = d.pop("state", None)
        self._stored = None
        self._forward = None
        self.__dict__.update(d)

    # -- stored form ------------------------------------------------------------
    def to_record(self) -> bytes:
        """The model as data: an ``.npz`` tree (see :mod:`jaxhp.serial`) holding the
        weights as arrays with their pytree paths, the Trainable as
        ``{"import": "module:QualName", "fields": {...}}``, and the scaling and
        labels ``predict`` needs."""
        from jaxhp import serial

        if self._stored is not None:  # as it was read
            return self._blob
        arrays: dict[str, np.ndarray] = {}
        trainable = describe_trainable(self._trainable, arrays)
        flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(self._state))
        paths = [jax.tree_util.keystr(p) for p, _ in flat]
        nodes = [serial.to_data(leaf, arrays, "state") for _, leaf in flat]
        doc = {
            "trial_id": int(self.trial_id),
            "kind": self._kind,
            "y_ndim": int(self._y_ndim),
            "trainable": trainable,
            "state": {"paths": paths, "leaves": nodes},
            "hp": serial.to_data(dict(self.hp), arrays, "hp"),
            "x_mean": serial.to_data(np.asarray(self._x_mean), arrays, "x_mean"),
            "x_std": serial.to_data(np.asarray(self._x_std), arrays, "x_std"),
            "aux": serial.to_data(self._aux, arrays, "aux"),
            "classes": serial.to_data(self._classes, arrays, "classes"),
        }
        return serial.dump_doc(doc, arrays)

    @classmethod
    def from_record(cls, blob: bytes, trainable: Any = None) -> Model:
        """The model :meth:`to_record` stored (no code runs: the Trainable is imported
        only when weights are used, unless ``trainable`` is given)."""
        from jaxhp import serial

        doc, arrays = serial.read_tree(blob)
        doc = doc["value"]
        if not isinstance(doc, dict):
            raise serial.SerialError("a stored model is not a record")
        self = cls.__new__(cls)
        try:
            state = doc["state"]
            paths, nodes = state["paths"], state["leaves"]
            if not (
                isinstance(paths, list)
                and isinstance(nodes, list)
                and len(paths) == len(nodes)
                and all(isinstance(p, str) for p in paths)
            ):
                raise serial.SerialError("a stored model's state is malformed")
            rec = doc["trainable"]
            if not isinstance(rec, dict) or not isinstance(rec.get("import"), str):
                raise serial.SerialError("a stored model names no Trainable")
            kind = doc["kind"]
            if kind not in (None, "classifier", "regressor"):
                raise serial.SerialError(f"a stored model of unknown kind {kind!r}")
            for k in ("trial_id", "y_ndim"):
                if not isinstance(doc[k], int) or isinstance(doc[k], bool):
                    raise serial.SerialError(f"a stored model's {k} is not an integer")
            hp = serial.from_data(doc["hp"], arrays)
            if not isinstance(hp, dict):
                raise serial.SerialError("a stored model's hp is not a dict")
            x_mean = serial.from_data(doc["x_mean"], arrays)
            x_std = serial.from_data(doc["x_std"], arrays)
            for name, a in (("x_mean", x_mean), ("x_std", x_std)):
                if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.ndim < 1:
                    raise serial.SerialError(f"a stored model's {name} is malformed")
            classes = serial.from_data(doc["classes"], arrays)
            if kind == "classifier" and not isinstance(classes, np.ndarray):
                raise serial.SerialError("a stored classifier has no class labels")
            aux = serial.from_data(doc["aux"], arrays)
            if kind == "regressor" and not (
                isinstance(aux, dict)
                and all(isinstance(aux.get(k), np.ndarray) for k in ("y_mean", "y_std"))
            ):
                raise serial.SerialError("a stored regressor has no target scaling")
        except (KeyError, TypeError) as e:
            raise serial.SerialError(f"a stored model lacks {e}") from None
        self._state = None
        self._stored = (rec, list(zip(paths, nodes, strict=True)))
        self._trainable_cls = trainable if isinstance(trainable, type) else None
        self._trainable = None if self._trainable_cls else trainable
        self._stored_arrays = arrays
        self._blob = blob
        self._forward = None
        self.hp = hp
        self.trial_id = doc["trial_id"]
        self._x_mean, self._x_std, self._aux = x_mean, x_std, aux
        self._kind, self._classes, self._y_ndim = kind, classes, doc["y_ndim"]
        return self

    # -- prediction -------------------------------------------------------------
    def _outputs(self, X: Any) -> np.ndarray:
        X = np.asarray(X, np.float32)
        if X.ndim < 1 or X.shape[1:] != self._x_mean.shape[1:]:
            raise ValueError(
                f"X rows have shape {X.shape[1:]}, expected {self._x_mean.shape[1:]}"
            )
        bad = ~np.isfinite(X.reshape(len(X), -1)).all(1)
        if bad.any():
            raise ValueError(
                f"X has NaN or Inf in {int(bad.sum())} row(s), first at row "
                f"{int(bad.argmax())}"
            )
        forward = self._get_forward()
        state = self.state
        xs = (X[None] - self._x_mean[:, None]) / self._x_std[:, None]  # [F, N, ...]
        return np.asarray(forward(state, jnp.asarray(xs)))  # [F, N, out]

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


class TrainableError(ValueError):
    """A stored Trainable that cannot be rebuilt here (pass ``trainable=``)."""


def _qualname(t: type) -> str:
    return f"{t.__module__}:{t.__qualname__}"


def describe_trainable(trainable: Any, arrays: dict[str, np.ndarray]) -> dict:
    """``{"import": "module:QualName", "fields": {...}}`` for a dataclass or NamedTuple
    Trainable whose fields are data; ``fields`` is None (and ``why`` says why) for
    another, which a reader must then be given."""
    import dataclasses

    from jaxhp import serial

    rec: dict[str, Any] = {"import": _qualname(type(trainable))}
    if dataclasses.is_dataclass(trainable) and not isinstance(trainable, type):
        fields = {
            f.name: getattr(trainable, f.name)
            for f in dataclasses.fields(trainable)
            if f.init
        }
    elif isinstance(trainable, tuple) and hasattr(type(trainable), "_fields"):
        fields = trainable._asdict()
    else:
        rec.update(fields=None, why="it is not a dataclass or a NamedTuple")
        return rec
    mark = len(arrays)
    try:
        rec["fields"] = serial.to_data(fields, arrays, "trainable")
    except serial.SerialError as e:
        for k in list(arrays)[mark:]:
            del arrays[k]
        rec.update(fields=None, why=str(e))
    return rec


def build_trainable(
    rec: dict, arrays: dict[str, np.ndarray], cls: type | None = None
) -> Any:
    """The Trainable a record describes: its class imported (or ``cls``, given by
    the caller), called with the stored fields.

    Only a dataclass or NamedTuple class with ``init``, ``step`` and ``evaluate`` is
    called; anything else a record names is refused before it is called."""
    import dataclasses

    from jaxhp import serial

    name = rec.get("import", "?")
    how = (
        "pass trainable= to jaxhp.load, or --trainable FILE.py:Name to `jaxhp predict`"
    )
    if rec.get("fields") is None:
        raise TrainableError(
            f"the study's Trainable {name} was not stored as data "
            f"({rec.get('why', 'no fields')}): {how}"
        )
    obj = cls if cls is not None else _import_trainable(str(name), how)
    is_nt = isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")
    if not (
        isinstance(obj, type) and (dataclasses.is_dataclass(obj) or is_nt)
    ) or not all(callable(getattr(obj, a, None)) for a in ("init", "step", "evaluate")):
        raise TrainableError(
            f"the study names {name}, which is not a Trainable dataclass or "
            f"NamedTuple: {how}"
        )
    try:
        fields = serial.from_data(rec["fields"], arrays)
        if not isinstance(fields, dict):
            raise serial.SerialError("fields are not a dict")
        return obj(**fields)
    except (serial.SerialError, TypeError, ValueError) as e:
        raise TrainableError(
            f"the study's Trainable {name} cannot be rebuilt from its fields ({e}): {how}"
        ) from None


def _import_trainable(name: str, how: str) -> Any:
    """The object ``module:QualName`` names (``__main__``: this process's own)."""
    import importlib
    import sys

    module, _, qual = name.partition(":")
    if not module or not qual or "<" in qual:
        raise TrainableError(
            f"the study's Trainable {name!r} cannot be imported: {how}"
        )
    if module == "__main__":
        obj = sys.modules.get("__main__")
    else:
        try:
            obj = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - any failure to import says the same
            raise TrainableError(
                f"the study's Trainable {name} cannot be imported "
                f"({type(e).__name__}: {e}): {how}"
            ) from None
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        where = "a script's __main__" if module == "__main__" else f"module {module}"
        raise TrainableError(
            f"the study's Trainable {name} is not defined here (it was defined in "
            f"{where}): {how}"
        )
    return obj


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


def _restore_state(
    trainable: Any, leaves: list[tuple[str, Any]], arrays: dict, hp: dict
) -> Any:
    """Stored state leaves put back into the pytree structure of the Trainable's own
    (kept) state: the structure comes from the code, never from the file."""
    from jaxhp import serial

    def one(key):
        s = trainable.init(key, {k: jnp.asarray(v) for k, v in hp.items()})
        keep = capabilities(trainable).keep
        return s if keep is None else keep(s)

    try:
        shapes = jax.eval_shape(one, jax.random.key(0))
    except Exception as e:  # noqa: BLE001 - the user's init, traced for its shapes
        raise TrainableError(
            f"cannot rebuild the stored weights: the Trainable's init failed ({e})"
        ) from None
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    want = [jax.tree_util.keystr(p) for p, _ in flat]
    have = [p for p, _ in leaves]
    if want != have:
        raise TrainableError(
            f"the stored weights do not fit this Trainable: it has state leaves "
            f"{want[:4]}{'...' if len(want) > 4 else ''}, the study "
            f"{have[:4]}{'...' if len(have) > 4 else ''}"
        )
    out = []
    for (path, node), (_, sds) in zip(leaves, flat, strict=True):
        a = serial.from_data(node, arrays)
        if not isinstance(a, jax.Array | np.ndarray) or tuple(a.shape[1:]) != tuple(
            sds.shape
        ):
            raise TrainableError(
                f"the stored weights do not fit this Trainable: {path} has shape "
                f"{getattr(a, 'shape', None)}, expected [folds, *{tuple(sds.shape)}]"
            )
        out.append(a)
    return jax.tree_util.tree_unflatten(treedef, out)
