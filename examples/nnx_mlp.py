"""Tune a Flax NNX model: an MLP whose hidden width is a static hyperparameter.

NNX modules are Python objects with state; ``jaxhp.nnx.pure`` turns the module's
constructor into pure ``init``/``apply`` functions over pytrees (``nnx.split`` and
``nnx.merge``), which is what the engine vmaps over trials. ``hidden`` sets a shape,
so it is static (one compiled program per width); the learning rate and weight decay
are per-trial arrays that reach optax through ``jaxhp.per_trial``.

Run: python examples/nnx_mlp.py [n_trials]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import optax
from flax import nnx
from sklearn.datasets import load_digits

import jaxhp


class MLP(nnx.Module):
    def __init__(self, din: int, hidden: int, dout: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(din, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, dout, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


class State(NamedTuple):
    params: Any  # nnx.Param variables
    rest: Any  # the module's other variables (none here)
    opt: Any


@dataclass(frozen=True)
class NNXClassifier(jaxhp.TrainableBase):
    hidden: int = 32  # static: the width of the hidden layer

    @property
    def model(self) -> jaxhp.nnx.PureModule:
        return jaxhp.nnx.pure(MLP, din=64, hidden=self.hidden, dout=10)

    def _tx(self, hp):
        return jaxhp.per_trial(optax.adamw)(
            learning_rate=hp["learning_rate"], weight_decay=hp["weight_decay"]
        )

    def init(self, key, hp):
        params, rest = self.model.init(key)
        return State(params, rest, self._tx(hp).init(params))

    def step(self, state, batch, hp):
        def loss_fn(params):
            logits, rest = self.model.apply(params, state.rest, batch.x)
            ce = jaxhp.losses.masked_softmax_cross_entropy(logits, batch.y, batch.mask)
            return ce, rest

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt = self._tx(hp).update(grads, state.opt, state.params)
        params = optax.apply_updates(state.params, updates)
        return State(params, rest, opt), {"loss": loss}

    def evaluate(self, state, data, hp):
        logits, _ = self.model.apply(state.params, state.rest, data.x)
        return {"accuracy": jaxhp.losses.masked_accuracy(logits, data.y, data.mask)}

    def keep(self, state):
        return State(state.params, state.rest, None)

    def predict(self, state, x, hp):
        return self.model.apply(state.params, state.rest, x)[0]


def main(
    n_trials: int = 16,
    population: int = 16,
    epochs: int = 10,
    seed: int = 0,
    hidden: tuple[int, ...] = (16, 64),
):
    X, y = load_digits(return_X_y=True)
    task = jaxhp.tasks.TrainableTask(
        NNXClassifier,  # its field `hidden` is the static hyperparameter
        X,
        y,
        metric="accuracy",
        stratify=True,
        seed=seed,
        batch_size=64,
        epochs=epochs,
    )
    space = jaxhp.Space(
        hidden=jaxhp.Choice(list(hidden)),
        learning_rate=jaxhp.Float(1e-3, 3e-2, log=True),
        weight_decay=jaxhp.Float(1e-6, 1e-2, log=True),
    )
    result = jaxhp.tune(
        task, space, "sobol", n_trials=n_trials, population=population, seed=seed
    )
    print(result.table(5))
    print("best:", result.best_params, f"accuracy={result.best_value:.4f}")
    return result


if __name__ == "__main__":
    main(*map(int, sys.argv[1:2]))
