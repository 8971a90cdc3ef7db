"""Tune your own model: a small Flax CNN on the 8x8 digits images, via the Trainable protocol.

The engine vmaps these three pure functions over folds and trials, so ``hp`` holds one
trial's hyperparameters as traced scalars: use them as arrays (here with
``optax.inject_hyperparams``-style arithmetic), never as Python constants.

Run: python examples/custom_cnn.py
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits

import jaxhp


class CNN(nn.Module):
    channels: int = 16

    @nn.compact
    def __call__(self, x):  # x: [B, 64] flattened 8x8 images
        x = x.reshape((-1, 8, 8, 1))
        x = nn.relu(nn.Conv(self.channels, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(2 * self.channels, (3, 3))(x))
        x = x.mean(axis=(1, 2))
        return nn.Dense(10)(x)


class State(NamedTuple):
    params: dict
    opt: optax.OptState


@dataclass(
    frozen=True
)  # frozen: hashable, so the engine can cache its compiled program
class CNNTrainable:
    channels: int = 16

    def _opt(self, hp):
        # Per-trial learning rate and weight decay as arrays: one program for every value.
        return optax.adamw(hp["learning_rate"], weight_decay=hp["weight_decay"])

    def init(self, key, hp):
        params = CNN(self.channels).init(key, jnp.zeros((1, 64)))["params"]
        return State(params, self._opt(hp).init(params))

    def _loss(self, params, batch):
        logits = CNN(self.channels).apply({"params": params}, batch.x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.y)
        return jnp.sum(jnp.where(batch.mask, ce, 0.0)) / jnp.maximum(
            batch.mask.sum(), 1
        )

    def step(self, state, batch, hp):
        loss, grads = jax.value_and_grad(self._loss)(state.params, batch)
        updates, opt = self._opt(hp).update(grads, state.opt, state.params)
        return State(optax.apply_updates(state.params, updates), opt), {"loss": loss}

    def evaluate(self, state, data, hp):
        logits = CNN(self.channels).apply({"params": state.params}, data.x)
        hit = (logits.argmax(-1) == data.y) & data.mask
        return {
            "accuracy": hit.sum() / data.mask.sum(),
            "loss": self._loss(state.params, data),
        }

    def keep(self, state):  # optional: the best epoch's copy needs no optimizer state
        return State(state.params, None)

    def predict(self, state, x, hp):  # given keep(state)
        return CNN(self.channels).apply({"params": state.params}, x)


def main(n_trials: int = 16, population: int = 16, epochs: int = 8, seed: int = 0):
    X, y = load_digits(return_X_y=True)
    task = jaxhp.tasks.TrainableTask(
        CNNTrainable(),
        X,
        y,
        metric="accuracy",
        direction="maximize",
        val_fraction=0.2,
        stratify=True,
        seed=seed,
        batch_size=64,
        epochs=epochs,
    )
    space = jaxhp.Space(
        learning_rate=jaxhp.Float(1e-4, 3e-2, log=True),
        weight_decay=jaxhp.Float(1e-6, 1e-2, log=True),
        batch_size=jaxhp.Choice([32, 64]),
    )
    result = jaxhp.tune(
        task, space, "sobol", n_trials=n_trials, population=population, seed=seed
    )
    print(result.table(5))
    print("best:", result.best_params, f"accuracy={result.best_value:.4f}")
    return result


if __name__ == "__main__":
    main()
