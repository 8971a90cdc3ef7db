"""Tune your own model: a Flax (linen) CNN on the 8x8 digits, its shape included.

``channels`` and ``depth`` set the network's shapes, so they are *static*
hyperparameters: the task builds one ``CNN`` per distinct pair and the engine compiles
one program per pair (a bucket), while the learning rate is a traced per-trial array
that one program serves for every value. The optimizer comes from ``hp`` through
``jaxhp.per_trial``, which is what lets it sit in Flax's ``TrainState``.

Run: python examples/custom_cnn.py [n_trials]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState
from sklearn.datasets import load_digits

import jaxhp


class Net(nn.Module):
    channels: int
    depth: int

    @nn.compact
    def __call__(self, x):  # x: [B, 64], flattened 8x8 images
        x = x.reshape((-1, 8, 8, 1))
        for i in range(self.depth):  # strided convolutions: quick to compile on a CPU
            x = nn.relu(nn.Conv(self.channels * 2**i, (3, 3), strides=(2, 2))(x))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


# Frozen: hashable, as the engine keys its compiled programs by the Trainable. Its
# fields are the static hyperparameters (TrainableTask takes them from the class).
@dataclass(frozen=True)
class CNN(jaxhp.TrainableBase):
    channels: int = 8
    depth: int = 1

    @property
    def net(self) -> Net:
        return Net(self.channels, self.depth)

    def init(self, key, hp):
        params = self.net.init(key, jnp.zeros((1, 64)))["params"]
        tx = jaxhp.per_trial(optax.adamw)(
            learning_rate=hp["learning_rate"], weight_decay=hp["weight_decay"]
        )
        return TrainState.create(apply_fn=self.net.apply, params=params, tx=tx)

    def step(self, state, batch, hp):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, batch.x)
            return jaxhp.losses.masked_softmax_cross_entropy(
                logits, batch.y, batch.mask
            )

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), {"loss": loss}

    def evaluate(self, state, data, hp):
        logits = state.apply_fn({"params": state.params}, data.x)
        return {"accuracy": jaxhp.losses.masked_accuracy(logits, data.y, data.mask)}

    def keep(self, state):  # the best epoch's copy needs the weights alone
        return state.params

    def predict(self, params, x, hp):  # given keep(state)
        return self.net.apply({"params": params}, x)


def main(
    n_trials: int = 16,
    population: int = 16,
    epochs: int = 6,
    seed: int = 0,
    channels: tuple[int, ...] = (4, 8),
    depths: tuple[int, ...] = (1, 2),
):
    X, y = load_digits(return_X_y=True)
    task = jaxhp.tasks.TrainableTask(
        CNN,  # a class: its fields channels and depth are static hyperparameters
        X,
        y,
        metric="accuracy",
        val_fraction=0.2,
        stratify=True,
        seed=seed,
        batch_size=64,
        epochs=epochs,
        weight_decay=1e-4,
    )
    space = jaxhp.Space(
        channels=jaxhp.Choice(list(channels)),
        depth=jaxhp.Choice(list(depths)),
        learning_rate=jaxhp.Float(1e-3, 3e-2, log=True),
    )
    result = jaxhp.tune(
        task, space, "sobol", n_trials=n_trials, population=population, seed=seed
    )
    print(result.table(5))
    print("buckets (compiled programs):", result.stats["buckets"])
    print("best:", result.best_params, f"accuracy={result.best_value:.4f}")
    return result


if __name__ == "__main__":
    main(*map(int, sys.argv[1:2]))
