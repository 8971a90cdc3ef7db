"""Built-in tasks: a Flax MLP classifier and regressor whose structure is tunable.

Depth and width run batched by padding: a bucket's program has ``depth`` hidden layers of
``width`` units (the bucket maximum, a power of two); trial ``i`` uses its first
``n_layers[i]`` layers and ``width[i]`` units of each (``width_l[i]`` of layer ``l``
when the space gives layers their own). Unused units start with zero weights, so
they output zero and receive zero gradients forever (no mask needed), and unused layers
are identities: a padded trial computes exactly what an unpadded one would. Kernels are initialised
LeCun-normal (untruncated) with the trial's *real* fan-in, and every random draw (initial
weights, dropout) is keyed by row so that it does not depend on the padding: a trial gives
the same result (up to float summation order) in any bucket.

Tunable hyperparameters (defaults in ``MLP_DEFAULTS``): ``n_layers``, ``width``,
``learning_rate``, ``batch_size``, ``epochs``, ``weight_decay``, ``dropout``,
``optimizer`` (adam, adamw, sgd), ``momentum`` (SGD), ``activation``
(relu, tanh, gelu, silu), ``lr_schedule`` (constant, cosine, linear) and ``warmup``
(the fraction of a trial's updates that ramp the learning rate up). ``width_0``,
``width_1``, ... give hidden layers their own widths (``width_0`` the first; a layer
without one takes ``width``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxhp import bits
from jaxhp.optim import OPTIMIZERS, SCHEDULES, OptState, opt_init, opt_update
from jaxhp.space import Choice, Fixed, Int, SpaceError
from jaxhp.tasks.base import Task, next_pow2, next_pow2_array
from jaxhp.tasks.data import DataError, check_arrays, make_folds, stack_folds
from jaxhp.trainable import Batch

__all__ = ["MLPClassifier", "MLPRegressor", "MLP_DEFAULTS", "MLPTrainable"]

# Every activation must map 0 to 0: padded units rely on it to stay exactly zero.
ACTIVATIONS = ("relu", "tanh", "gelu", "silu")
_ACT_FNS = (jax.nn.relu, jnp.tanh, jax.nn.gelu, jax.nn.silu)

MLP_DEFAULTS: dict[str, Any] = {
    "n_layers": 2,
    "width": 64,
    "learning_rate": 1e-3,
    "batch_size": 64,
    "epochs": 20,
    "weight_decay": 0.0,
    "dropout": 0.0,
    "optimizer": "adam",
    "momentum": 0.9,
    "activation": "relu",
    "lr_schedule": "constant",
    "warmup": 0.0,
}
# Mixed precision: "bfloat16" runs every layer's matmuls and activations in bfloat16
# while the weights, gradients, optimizer state, loss and metrics stay float32.
COMPUTE_DTYPES = ("float32", "bfloat16")

MLP_LIMITS = {
    "n_layers": (1, 64, True),
    "width": (1, 8192, True),
    "learning_rate": (0.0, math.inf, False),
    "batch_size": (1, math.inf, True),
    "epochs": (1, math.inf, True),
    "weight_decay": (0.0, math.inf, False),
    "dropout": (0.0, 0.99, False),
    "momentum": (0.0, 1.0, False),
    "warmup": (0.0, 0.9, False),
}

# Layer i's own width, ``width_<i>`` (``width_0``: the first hidden layer), as Optuna's
# ``n_units_l{i}``. No leading zeros: ``width_01`` would name no layer.
_LAYER_WIDTH = re.compile(r"width_(0|[1-9][0-9]*)")


def layer_width_index(name: str) -> int | None:
    """The layer whose width ``name`` sets (``width_<i>``), else None."""
    m = _LAYER_WIDTH.fullmatch(name)
    return None if m is None else int(m.group(1))


def layer_widths(hp: Mapping[str, Any], depth: int) -> list:
    """The widths of hidden layers ``0..depth-1``: ``width_<i>`` where ``hp`` has it,
    else ``width`` (the same object, so a caller can tell a uniform network)."""
    return [hp.get(f"width_{i}", hp["width"]) for i in range(depth)]


def _activate(z: jax.Array, code: jax.Array, used: tuple[int, ...]) -> jax.Array:
    if len(used) == 1:
        return _ACT_FNS[used[0]](z)
    out = _ACT_FNS[used[0]](z)
    for c in used[1:]:
        out = jnp.where(code == c, _ACT_FNS[c](z), out)
    return out


#: How dropout draws its uniforms: ``"hash"`` (:func:`jaxhp.bits.uniforms`, ~10 integer
#: operations a unit) or ``"threefry"`` (JAX's ``uniform`` of ``fold_in(key, layer *
#: 2**16 + row)``, ~10x the operations). Dropout draws a uniform for every unit of every
#: row of every layer at every step, so the draws' cost is a large share of a small
#: MLP's step: the hash is the default, threefry stays as the yardstick that
#: benchmarks/investigations/dropout_cost.py times it against (benchmarks/RESULTS.md).
DROPOUT_DRAWS = "hash"


def _dropout_uniforms(draws: str, key: jax.Array, layers: int, rows: int, units: int):
    """``[layers, rows, units]`` uniforms in ``[0, 1)`` for one step's dropout."""
    if draws == "hash":
        return bits.uniforms(key, layers, rows, units)
    ids = (np.arange(layers)[:, None] * 2**16 + np.arange(rows)).ravel()
    u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), (units,)))(
        jnp.asarray(ids, jnp.uint32)
    )
    return u.reshape(layers, rows, units)


class _MaskedMLP(nn.Module):
    depth: int
    width: int
    n_out: int
    activations: tuple[int, ...]
    dropout: bool
    min_depth: int = 1  # layers below it are used by every trial: no mask
    dtype: Any = None  # compute dtype of the layers (None: the parameters' float32)
    draws: str = "hash"  # dropout's uniforms (DROPOUT_DRAWS)

    @nn.compact
    def __call__(
        self, x: jax.Array, hp: Mapping[str, jax.Array], key: jax.Array | None = None
    ):
        h = x.reshape((x.shape[0], -1))
        # Padded units need no mask: their weights start at zero, so they output zero and
        # every gradient reaching them is zero (zero outgoing weights); no optimizer here
        # moves a weight whose gradient and value are zero. They stay exactly zero.
        if self.dropout and key is not None:
            # Unit (l, b, j)'s draw depends on (key, l, b, j) alone: a trial's dropout
            # does not depend on the bucket's depth, width or batch padding.
            drop_u = _dropout_uniforms(
                self.draws, key, self.depth, h.shape[0], self.width
            )
        for layer in range(self.depth):
            z = nn.Dense(self.width, dtype=self.dtype, name=f"hidden_{layer}")(h)
            a = _activate(z, hp["activation"], self.activations)
            if self.dropout and key is not None:
                keep = 1.0 - hp["dropout"]
                a = jnp.where(drop_u[layer] < keep, a / keep, 0.0)
            h = a if layer < self.min_depth else jnp.where(layer < hp["n_layers"], a, h)
        # The loss, its softmax and the metrics stay in float32 whatever the compute dtype.
        out = nn.Dense(self.n_out, dtype=self.dtype, name="out")(h)
        return out.astype(jnp.float32)


class MLPState(NamedTuple):
    params: Any
    opt: OptState
    # Mixed precision: the weights cast to the compute dtype, made by the step that
    # updates them (None in float32, and in the best-epoch state ``keep`` returns).
    low: Any = None


@dataclass(frozen=True)
class MLPTrainable:
    """The padded MLP of one bucket (static and hashable: it keys the compile cache)."""

    kind: str  # "classifier" | "regressor"
    n_in: int
    n_out: int
    depth: int
    width: int
    dropout: bool
    activations: tuple[int, ...]
    optimizers: tuple[int, ...]
    min_depth: int = 1  # the fewest layers a trial of the space can have
    scheduled: bool = False  # some trial's learning rate has a schedule or warm-up
    compute_dtype: str = "float32"  # "bfloat16": bf16 matmuls, float32 master weights
    dropout_draws: str = "hash"  # DROPOUT_DRAWS when the bucket was made
    # step's loss: per-row terms that the engine sums once per epoch (see Trainable)
    loss_per_row: ClassVar[bool] = True

    @property
    def module(self) -> _MaskedMLP:
        return _MaskedMLP(
            self.depth,
            self.width,
            self.n_out,
            self.activations,
            self.dropout,
            max(1, min(self.min_depth, self.depth)),
            None if self.compute_dtype == "float32" else jnp.dtype(self.compute_dtype),
            self.dropout_draws,
        )

    def init(self, key: jax.Array, hp: Mapping[str, jax.Array]) -> MLPState:
        # LeCun-normal kernels with the trial's real fan-in, zero biases, zero weights for
        # padded units. Row r of kernel k is drawn from fold_in(key, k * 2**20 + r), and
        # JAX's (partitionable) threefry makes a row's j-th entry depend on j alone, so a
        # trial's weights are the same whatever bucket width or depth it is padded to.
        # (One vmapped RNG call: every call site costs compile time on the CPU.)
        # A layer's kernel is masked to its fan-in's rows and its own width's columns;
        # the output layer's rows to the width of the trial's last layer (the layers
        # past it are identities).
        w, n_in, n_out = self.width, self.n_in, self.n_out
        widths = layer_widths(hp, self.depth)
        units = [(jnp.arange(w) < wl).astype(jnp.float32) for wl in widths]
        inv_sqrt = [jax.lax.rsqrt(wl.astype(jnp.float32)) for wl in widths]
        if all(wl is widths[0] for wl in widths):  # one width: every layer's masks
            last_units, last_inv_sqrt = units[0], inv_sqrt[0]
        else:
            last = jnp.stack(widths)[jnp.clip(hp["n_layers"] - 1, 0, self.depth - 1)]
            last_units = (jnp.arange(w) < last).astype(jnp.float32)
            last_inv_sqrt = jax.lax.rsqrt(last.astype(jnp.float32))
        row_ids = np.concatenate(
            [np.arange(n_in)]
            + [k * 2**20 + np.arange(w) for k in range(1, self.depth + 1)]
        ).astype(np.uint32)  # first layer, hidden layers 1.., output
        cols = max(w, n_out)
        rows = jax.vmap(
            lambda i: jax.random.normal(jax.random.fold_in(key, i), (cols,))
        )(jnp.asarray(row_ids))  # [R, cols]
        first = rows[:n_in, :w] / math.sqrt(n_in) * units[0]
        params = {"hidden_0": {"kernel": first, "bias": jnp.zeros(w)}}
        for layer in range(1, self.depth):
            k = rows[n_in + (layer - 1) * w : n_in + layer * w, :w]
            k = k * (units[layer - 1][:, None] * units[layer][None, :])
            params[f"hidden_{layer}"] = {
                "kernel": k * inv_sqrt[layer - 1],
                "bias": jnp.zeros(w),
            }
        out = (
            rows[n_in + (self.depth - 1) * w :, :n_out]
            * last_units[:, None]
            * last_inv_sqrt
        )
        params["out"] = {"kernel": out, "bias": jnp.zeros(n_out)}
        return MLPState(
            params, opt_init(params, kinds=self.optimizers), self._low(params)
        )

    def _low(self, params) -> Any:
        """The weights in the compute dtype, or None in float32. The step makes them
        right after the optimizer writes the float32 weights, so on a GPU the cast fuses
        into the update's kernel; cast at each use, they cost a kernel per layer per
        step (benchmarks/RESULTS.md). (The layers' own cast gives ``evaluate`` the same
        values.)"""
        if self.compute_dtype == "float32":
            return None
        return jax.tree.map(lambda p: p.astype(self.compute_dtype), params)

    @staticmethod
    def _compute_weights(state: MLPState) -> Any:
        """The weights the layers compute with: the compute-dtype copy when there is
        one, else the float32 weights."""
        return state.params if state.low is None else state.low

    def apply(self, params, x, hp, key=None) -> jax.Array:
        return self.module.apply({"params": params}, x, hp, key)

    def _row_loss(self, out: jax.Array, y: jax.Array) -> jax.Array:
        """Each row's loss, ``[B]``."""
        if self.kind == "classifier":
            # log-softmax cross-entropy with a stop-gradient max shift: the same value as
            # optax's (which goes through logsumexp) in fewer kernels per step.
            shifted = out - jax.lax.stop_gradient(jnp.max(out, axis=-1, keepdims=True))
            # The label's logit through a one-hot select, not take_along_axis: its
            # gradient is then elementwise (fused), not a scatter kernel per step.
            hot = y[:, None] == jnp.arange(out.shape[-1])
            label = jnp.sum(jnp.where(hot, shifted, 0.0), axis=-1)
            return jnp.log(jnp.sum(jnp.exp(shifted), axis=-1)) - label
        return jnp.mean(jnp.square(out - y.reshape(out.shape)), axis=-1)

    def _loss(self, out: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
        """The mean loss over the real rows."""
        per_row = jnp.where(mask, self._row_loss(out, y), 0.0)
        return jnp.sum(per_row) / jnp.maximum(jnp.sum(mask), 1)

    def _loss_terms(
        self, out: jax.Array, y: jax.Array, mask: jax.Array, count: jax.Array
    ) -> jax.Array:
        """Each row's share of the batch's mean loss (zero on padding rows), ``[B]``:
        they sum to the mean over the ``count`` real rows."""
        per_row = jnp.where(mask, self._row_loss(out, y), 0.0)
        return per_row / jnp.maximum(count, 1)

    def step(self, state: MLPState, batch: Batch, hp) -> tuple[MLPState, dict]:
        def loss_fn(params):
            terms = self._loss_terms(
                self.apply(params, batch.x, hp, batch.key),
                batch.y,
                batch.mask,
                batch.count,
            )
            return jnp.sum(terms), terms

        # The loss goes back as its per-row terms (loss_per_row): the engine sums them
        # once per epoch, so no step reduces them over the batch (the gradient never
        # needs the sum's value).
        # Mixed precision differentiates at the compute-dtype weights: the same values
        # as through a cast of the float32 ones, whose gradient is the cast back.
        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            self._compute_weights(state)
        )
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
        params, opt = opt_update(
            grads,
            state.opt,
            state.params,
            hp,
            kinds=self.optimizers,
            scheduled=self.scheduled,
        )
        return MLPState(params, opt, self._low(params)), {"loss": terms}

    def evaluate(self, state: MLPState, data: Batch, hp) -> dict[str, jax.Array]:
        out = self.apply(self._compute_weights(state), data.x, hp)
        n = jnp.maximum(jnp.sum(data.mask), 1)
        loss = self._loss(out, data.y, data.mask)
        if self.kind == "classifier":
            hit = (jnp.argmax(out, -1) == data.y) & data.mask
            return {"accuracy": jnp.sum(hit) / n, "loss": loss}
        # Regression targets are standardised per fold; report in the original units.
        y = data.y.reshape(out.shape)
        y_std = data.aux["y_std"]
        err = jnp.where(data.mask[:, None], jnp.square(out - y), 0.0)
        mse = jnp.sum(err * jnp.square(y_std)) / (n * out.shape[-1])
        y_mean = jnp.sum(jnp.where(data.mask[:, None], y, 0.0), 0) / n
        sst = jnp.sum(jnp.where(data.mask[:, None], jnp.square(y - y_mean), 0.0))
        r2 = 1.0 - jnp.sum(err) / jnp.maximum(sst, 1e-12)
        return {"mse": mse, "r2": r2, "loss": loss}

    def keep(self, state: MLPState) -> MLPState:
        """The best epoch's weights without the optimizer state (see ``Trainable``)."""
        return MLPState(state.params, None)

    def predict(self, state: MLPState, x: jax.Array, hp) -> jax.Array:
        return self.apply(state.params, x, hp)


class _MLPTask(Task):
    kind: str
    metrics: dict[str, str]  # metric -> direction

    def __init__(
        self,
        X: Any,
        y: Any,
        *,
        val_fraction: float | None = None,
        folds: int | None = None,
        X_val: Any = None,
        y_val: Any = None,
        metric: str | None = None,
        standardize: bool = True,
        seed: int = 0,
        compute_dtype: str = "float32",
        **defaults: Any,
    ):
        metric = next(iter(self.metrics)) if metric is None else metric
        if metric not in self.metrics:
            raise ValueError(
                f"metric must be one of {sorted(self.metrics)}, got {metric!r}"
            )
        unknown = {
            k
            for k in defaults
            if k not in MLP_DEFAULTS and layer_width_index(k) is None
        }
        if unknown:
            raise TypeError(
                f"unknown hyperparameter default(s) {sorted(unknown)}; "
                f"known: {sorted(MLP_DEFAULTS)}"
            )
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}"
            )
        self.compute_dtype = compute_dtype
        self.metric = metric
        self.direction = self.metrics[metric]
        self.defaults = {**MLP_DEFAULTS, **defaults}
        self.vocab = {
            "optimizer": OPTIMIZERS,
            "activation": ACTIVATIONS,
            "lr_schedule": SCHEDULES,
        }
        self.limits = MLP_LIMITS
        self.check_defaults(defaults)
        self.bucket_width_min = 8
        if val_fraction is None and folds is None and X_val is None:
            val_fraction = 0.2
        X, y = check_arrays(X, y)
        y, aux = self._targets(y)
        if X_val is not None and y_val is not None:
            _, y_val = check_arrays(X_val, y_val, name="X_val")
            y_val = self._val_targets(y_val)
        splits = make_folds(
            X,
            y,
            val_fraction=val_fraction,
            folds=folds,
            X_val=X_val,
            y_val=y_val,
            stratify=self.kind == "classifier",
            seed=seed,
        )
        splits, aux = self._scale(splits)
        self.n_features = int(np.prod(X.shape[1:]))
        self.data = stack_folds(splits, standardize=standardize, aux=aux)

    more_names = " and width_0, width_1, ... (one hidden layer's width each)"

    def family(self, name: str) -> str:
        return "width" if layer_width_index(name) is not None else name

    def _targets(self, y):
        return y, None

    def _val_targets(self, y):
        return y

    def _scale(self, splits):
        return splits, None

    def check_space(self, space) -> None:
        super().check_space(space)

        # Every bucket gets the space's maximum depth (unused layers are identities), so
        # a bucket's program keeps its shape from round to round and compiles once.
        # Likewise the optimizers, activations and dropout that the space can produce.
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
        for name in [*space, *self.defaults]:
            i = layer_width_index(name)
            if i is not None and i >= depth:
                raise SpaceError(
                    f"{name}: no trial has a layer {i} (width_0 is the first): "
                    f"n_layers is at most {depth}"
                )
        self._static = {
            "depth": depth,
            "min_depth": int(min(possible("n_layers"))),
            "activations": {ACTIVATIONS.index(a) for a in possible("activation")},
            "optimizers": {OPTIMIZERS.index(o) for o in possible("optimizer")},
            "scheduled": set(possible("lr_schedule")) != {"constant"}
            or max(possible("warmup")) > 0,
            "dropout": max(possible("dropout")) > 0,
        }

    def conditions(self, space) -> dict[str, dict[str, list]]:
        """``momentum`` matters to SGD only; ``width_<i>`` to networks with more than
        ``i`` hidden layers; ``width`` to those with a layer that has no ``width_<i>``.
        Each only where the space searches what it depends on."""
        out: dict[str, dict[str, list]] = {}
        opt = space.get("optimizer")
        if "momentum" in space and (
            (isinstance(opt, Choice) and "sgd" in opt.values and len(opt.values) > 1)
            or (isinstance(opt, Fixed) and opt.value != "sgd")
        ):
            out["momentum"] = {"optimizer": ["sgd"]}
        depth = space.get("n_layers")
        if not isinstance(depth, (Int, Choice)):
            return out
        depths = (
            list(depth.values)
            if isinstance(depth, Choice)
            else list(range(depth.low, depth.high + 1))
        )
        own = 0  # layers 0..own-1 have a width_<i> of their own
        while f"width_{own}" in space:
            own += 1
        for name in space:
            i = layer_width_index(name)
            i = own if name == "width" else i
            if i is None:
                continue
            deeper = [int(n) for n in depths if n > i]
            if deeper and len(deeper) < len(depths):  # some trials use it, some not
                out[name] = {"n_layers": deeper}
        return out

    def hparams(self, space, values) -> dict[str, np.ndarray]:
        """As :meth:`Task.hparams`, plus ``total_steps``, each trial's updates over its
        whole budget (``epochs * ceil(n / batch_size)``, ``n`` the largest fold's
        training rows): the length its learning-rate schedule spans."""
        hp = super().hparams(space, values)
        n = int(np.max(self.data.n_train))
        steps = -(-n // np.maximum(hp["batch_size"].astype(np.int64), 1))
        hp["total_steps"] = (hp["epochs"] * steps).astype(np.float32)
        return hp

    @staticmethod
    def _widest(hp: Mapping[str, np.ndarray]) -> np.ndarray:
        """Each trial's widest hidden layer among those it has, ``[P]``."""
        if not any(layer_width_index(k) is not None for k in hp):
            return np.asarray(hp["width"])
        n_layers = np.asarray(hp["n_layers"])
        depth = int(np.max(n_layers))
        widths = np.stack([np.asarray(w) for w in layer_widths(hp, depth)], axis=1)
        return np.max(np.where(np.arange(depth) < n_layers[:, None], widths, 0), axis=1)

    def shape_keys(self, hp) -> np.ndarray:
        return next_pow2_array(np.maximum(self._widest(hp), self.bucket_width_min))

    def trainable(self, hp: Mapping[str, np.ndarray]) -> MLPTrainable:
        st = getattr(
            self,
            "_static",
            {
                "depth": 1,
                "min_depth": 1,
                "activations": set(),
                "optimizers": set(),
                "scheduled": False,
                "dropout": False,
            },
        )
        return MLPTrainable(
            kind=self.kind,
            n_in=self.n_features,
            n_out=self.n_out,
            depth=max(int(np.max(hp["n_layers"])), st["depth"]),
            width=next_pow2(max(int(np.max(self._widest(hp))), self.bucket_width_min)),
            dropout=bool(np.any(hp["dropout"] > 0)) or st["dropout"],
            activations=tuple(
                sorted(set(np.asarray(hp["activation"]).tolist()) | st["activations"])
            ),
            optimizers=tuple(
                sorted(set(np.asarray(hp["optimizer"]).tolist()) | st["optimizers"])
            ),
            min_depth=min(int(np.min(hp["n_layers"])), st["min_depth"]),
            scheduled=bool(
                np.any(np.asarray(hp.get("lr_schedule", 0)) != 0)
                or np.any(np.asarray(hp.get("warmup", 0.0)) > 0)
            )
            or st["scheduled"],
            compute_dtype=self.compute_dtype,
            dropout_draws=DROPOUT_DRAWS,
        )

    def flops_per_row(self, tr: MLPTrainable) -> float:
        """Training FLOPs per example of a bucket's padded network (forward + backward)."""
        return 6.0 * (
            tr.n_in * tr.width + (tr.depth - 1) * tr.width**2 + tr.width * tr.n_out
        )

    def trial_flops_per_row(
        self, tr: MLPTrainable, hp: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """``[n]``: training FLOPs per example of each trial's own network (its layers,
        its widths), the work a trial trained alone would do; the bucket's padded
        network costs :meth:`flops_per_row`."""
        n_layers = np.asarray(hp["n_layers"]).astype(np.int64)
        depth = int(n_layers.max())
        widths = [
            np.broadcast_to(np.asarray(w, float), n_layers.shape)
            for w in layer_widths(hp, depth)
        ]
        macs = tr.n_in * widths[0]
        for i in range(1, depth):  # layer i exists where the trial has > i layers
            macs = macs + np.where(n_layers > i, widths[i - 1] * widths[i], 0.0)
        last = np.take_along_axis(
            np.stack(widths, axis=1), (n_layers - 1)[:, None], axis=1
        )[:, 0]
        return 6.0 * (macs + last * tr.n_out)


class MLPClassifier(_MLPTask):
    """Tune a Flax MLP classifier on arrays.

    Args:
        X: inputs ``[N, ...]`` (flattened by the model), numeric and finite.
        y: class labels ``[N]`` (any hashable values; mapped to ``0..C-1``).
        val_fraction: hold out this stratified fraction for validation (default 0.2).
        folds: instead, k-fold stratified cross-validation; the metric is the fold mean.
        X_val, y_val: instead, an explicit validation set.
        metric: ``"accuracy"`` (maximised, default) or ``"loss"`` (cross-entropy, minimised).
        standardize: standardise inputs with each fold's training statistics.
        seed: seed of the split.
        compute_dtype: ``"float32"`` (default) or ``"bfloat16"``: mixed precision, the
            layers computing in bfloat16 on float32 master weights (faster matmuls on
            GPUs and TPUs; on a CPU usually slower).
        **defaults: defaults for hyperparameters the space leaves out, e.g. ``epochs=30``.

    Example:
        >>> X, y = sklearn.datasets.load_digits(return_X_y=True)
        >>> task = MLPClassifier(X, y, folds=5, epochs=30)
    """

    kind = "classifier"
    metrics = {"accuracy": "maximize", "loss": "minimize"}  # the first is the default

    def _targets(self, y):
        y = np.asarray(y)
        if y.ndim != 1:
            raise DataError(f"y must be a vector of class labels, got shape {y.shape}")
        try:
            self.classes_ = np.unique(y)
        except TypeError:  # labels of several types that do not compare: 1 and "a"
            kinds = sorted({type(v).__name__ for v in y})
            raise DataError(
                f"y's labels must be of one type to sort them into classes, got {kinds}"
            ) from None
        if len(self.classes_) < 2:
            raise DataError("y has a single class; a classifier needs at least two")
        self.n_out = len(self.classes_)
        return np.searchsorted(self.classes_, y).astype(np.int32), None

    def _val_targets(self, y):
        y = np.asarray(y)
        unknown = set(np.unique(y)) - set(self.classes_)
        if unknown:
            raise DataError(f"y_val has classes not seen in y: {sorted(unknown)[:5]}")
        return np.searchsorted(self.classes_, y).astype(np.int32)


def _numeric_targets(y, name: str) -> np.ndarray:
    """A regressor's targets as float32, or a ``DataError`` saying they are not numbers."""
    try:
        return np.asarray(y, np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be numeric for a regressor: {e}") from None


class MLPRegressor(_MLPTask):
    """Tune a Flax MLP regressor on arrays (targets standardised per fold for training).

    Args: as :class:`MLPClassifier`, with ``y`` of shape ``[N]`` or ``[N, k]`` and
        ``metric`` one of ``"mse"`` (original units, minimised, default), ``"r2"``
        (maximised) or ``"loss"`` (MSE on standardised targets, minimised).

    Example:
        >>> X, y = sklearn.datasets.load_diabetes(return_X_y=True)
        >>> task = MLPRegressor(X, y, val_fraction=0.2)
    """

    kind = "regressor"
    metrics = {
        "mse": "minimize",
        "r2": "maximize",
        "loss": "minimize",
    }  # first: default

    def _targets(self, y):
        y = _numeric_targets(y, "y")
        if y.ndim not in (1, 2):
            raise DataError(f"y must have shape [N] or [N, k], got {y.shape}")
        self.n_out = 1 if y.ndim == 1 else y.shape[1]
        self.y_ndim = y.ndim
        return y.reshape(len(y), -1), None

    def _val_targets(self, y):
        y = _numeric_targets(y, "y_val").reshape(len(y), -1)
        if y.shape[1] != self.n_out:
            raise DataError(
                f"y_val has {y.shape[1]} target(s) a row but y has {self.n_out}"
            )
        return y

    def _scale(self, splits):
        out, means, stds = [], [], []
        for x_tr, y_tr, x_va, y_va in splits:
            # In float64: the squares of large float32 targets overflow float32.
            y_tr, y_va = np.asarray(y_tr, np.float64), np.asarray(y_va, np.float64)
            m, sd = y_tr.mean(0), y_tr.std(0)
            s = np.where(sd > 1e-8 * np.maximum(np.abs(m), 1.0), sd, 1.0)
            if self.metric == "mse" and np.max(s) ** 2 > 1e36:
                raise DataError(
                    f"y's standard deviation is {np.max(s):.3g}: its mse would overflow "
                    "float32; rescale y, or tune metric='r2' or 'loss'"
                )
            y_tr, y_va = (((y - m) / s).astype(np.float32) for y in (y_tr, y_va))
            out.append((x_tr, y_tr, x_va, y_va))
            means.append(m)
            stds.append(s)
        aux = {
            "y_mean": np.stack(means).astype(np.float32),
            "y_std": np.stack(stds).astype(np.float32),
        }
        return out, aux
