"""A user's own model: static hyperparameters, per-trial optax, NNX, pre-flight errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxhp
from jaxhp import Choice, Fixed, Float, Int, Space, SpaceError
from jaxhp.engine import plan_buckets, run_population
from jaxhp.tasks import TrainableError, TrainableTask, check_trainable


class NetState(NamedTuple):
    params: Any
    opt: Any


@dataclass(frozen=True)
class TinyNet(jaxhp.TrainableBase):
    """A plain-JAX MLP whose width and depth are static (quick to compile)."""

    width: int = 4
    depth: int = 1

    def __post_init__(self):
        # Static values arrive as Python values, never as arrays.
        assert type(self.width) is int and type(self.depth) is int

    def _tx(self, hp):
        return jaxhp.per_trial(optax.sgd)(learning_rate=hp["learning_rate"])

    def init(self, key, hp):
        dims = [64] + [self.width] * self.depth + [10]
        keys = jax.random.split(key, len(dims) - 1)
        params = [
            jax.random.normal(k, (a, b)) / np.sqrt(a)
            for k, a, b in zip(keys, dims[:-1], dims[1:], strict=True)
        ]
        return NetState(params, self._tx(hp).init(params))

    def _logits(self, params, x):
        for w in params[:-1]:
            x = jnp.tanh(x @ w)
        return x @ params[-1]

    def step(self, state, batch, hp):
        def loss_fn(params):
            logits = self._logits(params, batch.x)
            return jaxhp.losses.masked_softmax_cross_entropy(
                logits, batch.y, batch.mask
            )

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt = self._tx(hp).update(grads, state.opt, state.params)
        return NetState(optax.apply_updates(state.params, updates), opt), {"loss": loss}

    def evaluate(self, state, data, hp):
        logits = self._logits(state.params, data.x)
        return {"accuracy": jaxhp.losses.masked_accuracy(logits, data.y, data.mask)}


@pytest.fixture(scope="module")
def data(digits):
    X, y = digits
    return X[:240], y[:240]


def _task(data, **kw):
    X, y = data
    kw = {"metric": "accuracy", "val_fraction": 0.25, "batch_size": 32, **kw}
    return TrainableTask(TinyNet, X, y, epochs=2, **kw)


SPACE = Space(
    width=Choice([4, 8]),
    depth=Choice([1, 2]),
    learning_rate=Float(1e-2, 1e-1, log=True),
)


def test_static_hyperparameters_bucket_and_trials_train_as_alone(data):
    task = _task(data)
    assert task.static == ("width", "depth")  # the class's dataclass fields
    first = [
        {"width": 4, "depth": 1, "learning_rate": 0.05},
        {"width": 8, "depth": 2, "learning_rate": 0.02},
    ]
    res = jaxhp.tune(
        task, SPACE, "random", n_trials=3, population=3, seed=1, enqueue=first
    )
    configs = {(t.params["width"], t.params["depth"]) for t in res.trials}
    assert len(configs) >= 2
    assert res.stats["buckets"] == len(configs)  # one program per configuration
    # (check_space also built the one configuration it traced.)
    assert configs <= set(task._built) and all(
        isinstance(tr, TinyNet) for tr in task._built.values()
    )
    # Two trials of different configurations, each trained alone with its trial id.
    seen = {}
    for t in res.trials:
        seen.setdefault((t.params["width"], t.params["depth"]), t)
    for t in list(seen.values())[:2]:
        hp = task.hparams(SPACE, {k: np.asarray([v]) for k, v in t.params.items()})
        assert hp["width"].dtype == np.int32  # static values are in hp too
        (alone,), _, _ = run_population(task, hp, np.array([t.trial_id]), seed=1)
        np.testing.assert_allclose(
            alone.curves["train_loss"], t.curves["train_loss"], rtol=2e-4, atol=1e-6
        )
        np.testing.assert_allclose(alone.value, t.value, atol=1e-6)


def test_auto_bucketing_merges_configurations_only_with_pad(data):
    task = _task(data)
    vals = {
        "width": np.array([4, 8, 4, 8, 4]),
        "depth": np.array([1, 1, 2, 2, 1]),
        "learning_rate": np.full(5, 0.05),
    }
    hp = task.hparams(SPACE, vals)
    groups = plan_buckets(task, hp, bucketing="auto", n_rows=180)
    assert sorted(map(list, groups)) == [[0, 4], [1], [2], [3]]
    assert not task.can_share(hp) and task.can_share(
        {k: v[[0, 4]] for k, v in hp.items()}
    )
    # "none" puts them in one program: training it says what to do.
    with pytest.raises(TrainableError, match="pad=") as e:
        run_population(task, hp, np.arange(5), seed=0, bucketing="none")
    assert "\n" not in str(e.value)

    padded = _task(data, pad="max")
    hp = padded.hparams(SPACE, vals)
    groups = plan_buckets(padded, hp, bucketing="auto", n_rows=180)
    assert len(groups) < 4 and padded.can_share(hp)
    assert padded.trainable(hp) == TinyNet(8, 2)


def test_static_hyperparameter_errors(data):
    task = _task(data)
    cases = [
        (Space(width=Float(4, 8)), r"width \(static\): .*use Int, or Choice or Fixed"),
        (Space(width=Choice([4.5, 8])), r"width \(static\): .*integer or a category"),
        # The default (TinyNet's width=4) and the choices must be of one kind.
        (Space(width=Choice(["wide"])), r"width \(static\): mixes numbers and categ"),
    ]
    for space, message in cases:
        with pytest.raises(SpaceError, match=message):
            jaxhp.tune(task, space, n_trials=1)
    X, y = data

    def make(width, depth):
        return TinyNet(width, depth)

    bare = TrainableTask(make, X, y, static=("width", "depth"), metric="accuracy")
    with pytest.raises(SpaceError, match=r"width: a static hyperparameter .* width="):
        bare.check_space(Space(depth=Int(1, 2)))
    with pytest.raises(SpaceError, match="engine reads it"):
        TrainableTask(make, X, y, static=("batch_size",), metric="accuracy")


def test_categorical_static_reaches_the_factory_as_its_value(data):
    X, y = data
    made = []

    def make(act, width):
        made.append((act, width))
        return TinyNet(width, 1)

    task = TrainableTask(
        make, X, y, static=("act", "width"), metric="accuracy", act="tanh", width=4
    )
    space = Space(act=Choice(["relu", "tanh"]), width=Fixed(8))
    hp = task.hparams(space, {"act": np.array([1, 0, 1]), "width": np.full(3, 8)})
    assert hp["act"].tolist() == [1, 0, 1]  # the index into Choice.values
    keys = np.asarray(task.shape_keys(hp))
    assert keys[0] == keys[2] != keys[1]
    task.trainable({k: v[:1] for k, v in hp.items()})
    assert made == [("tanh", 8)]


# ------------------------------------------------------------------ per-trial optax


def test_per_trial_optimizer_in_a_train_state_matches_optax():
    import flax.linen as nn
    from flax.training.train_state import TrainState

    dense = nn.Dense(3)

    def init(key, hp):
        params = dense.init(key, jnp.zeros((1, 4)))["params"]
        tx = jaxhp.per_trial(optax.adamw)(learning_rate=hp["lr"], weight_decay=hp["wd"])
        return TrainState.create(apply_fn=dense.apply, params=params, tx=tx)

    def step(state, x):
        grads = jax.grad(lambda p: state.apply_fn({"params": p}, x).sum())(state.params)
        return state.apply_gradients(grads=grads)

    keys = jax.random.split(jax.random.key(0), 2)
    hp = {"lr": jnp.array([0.1, 0.01]), "wd": jnp.array([1e-2, 1e-4])}
    x = jnp.arange(8.0).reshape(2, 4)
    states = jax.jit(jax.vmap(init))(keys, hp)
    after = jax.jit(jax.vmap(step, in_axes=(0, None)))(states, x)
    # The same structure whenever init is traced (the engine traces it again to
    # refill a slot): the optimizer compares equal by its factory and numbers' names.
    again = jax.jit(lambda k, h: jax.vmap(init)(k, h))(keys, hp)
    assert jax.tree.structure(again) == jax.tree.structure(states)
    for i in range(2):
        params = jax.tree.map(lambda a, i=i: a[i], states.params)
        tx = optax.adamw(float(hp["lr"][i]), weight_decay=float(hp["wd"][i]))
        grads = jax.grad(lambda p: dense.apply({"params": p}, x).sum())(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        want = optax.apply_updates(params, updates)
        got = jax.tree.map(lambda a, i=i: a[i], after.params)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6),
            got,
            want,
        )
    tx = jaxhp.optim.from_hp(optax.sgd, {"lr": 0.1}, learning_rate="lr")
    assert tx == jaxhp.per_trial(optax.sgd)(learning_rate=0.5)
    with pytest.raises(KeyError, match="hp has no 'lrate'"):
        jaxhp.optim.from_hp(optax.sgd, {"lr": 0.1}, learning_rate="lrate")


def test_masked_losses_skip_padding():
    logits = jnp.array([[2.0, 0.0], [0.0, 3.0], [9.0, -9.0]])
    labels = jnp.array([0, 1, 7])  # the padding row's label is out of range
    mask = jnp.array([True, True, False])
    want = optax.softmax_cross_entropy_with_integer_labels(logits[:2], labels[:2])
    got = jaxhp.losses.masked_softmax_cross_entropy(logits, labels, mask)
    np.testing.assert_allclose(got, want.mean(), rtol=1e-6)
    assert float(jaxhp.masked_mean(jnp.array([1.0, 3.0, 100.0]), mask)) == 2.0
    assert float(jaxhp.masked_mean(jnp.ones(3), jnp.zeros(3, bool))) == 0.0
    assert float(jaxhp.losses.masked_accuracy(logits, labels, mask)) == 1.0


# ------------------------------------------------------------------ contracts


def test_capabilities_of_duck_typed_and_declared_trainables():
    from jaxhp.trainable import capabilities

    @dataclass(frozen=True)
    class Duck:
        def init(self, key, hp): ...
        def step(self, state, batch, hp): ...
        def evaluate(self, state, data, hp): ...

    caps = capabilities(Duck())
    assert (caps.keep, caps.predict, caps.population_step) == (None, None, None)
    assert caps.loss_per_row is False and caps.flops_per_row == 0.0
    mlp = jaxhp.tasks.mlp.MLPTrainable("classifier", 64, 10, 1, 8, False, (0,), (0,))
    caps = capabilities(mlp)
    assert caps.loss_per_row and caps.keep is not None and caps.population_step is None
    assert capabilities(TinyNet()).keep is None

    class Stopper:  # duck-typed: the declared defaults apply
        def init(self, n): ...
        def update(self, state, report): ...

    assert not jaxhp.stopping.is_per_trial(Stopper())
    assert jaxhp.stopping.is_per_trial(jaxhp.stopping.Patience(2))
    fill = jnp.array([True, False])
    out = jaxhp.stopping.reset(Stopper(), jnp.zeros(2), fill, jnp.ones(2))
    assert out.tolist() == [1.0, 0.0]


# ------------------------------------------------------------------ mistakes


@dataclass(frozen=True)
class Mistake(TinyNet):
    """TinyNet with one mistake, chosen by ``kind``."""

    kind: str = ""

    def init(self, key, hp):
        if self.kind == "float":
            lr = float(hp["learning_rate"])  # a traced value as a Python number
            del lr
        if self.kind == "if":
            if hp["learning_rate"] > 0.05:  # a Python branch on a traced value
                pass
        if self.kind == "closure":
            import flax.linen as nn
            from flax.training.train_state import TrainState

            dense = nn.Dense(10)
            params = dense.init(key, jnp.zeros((1, 64)))["params"]
            tx = optax.adam(hp["learning_rate"])  # the traced lr in a closure
            return TrainState.create(apply_fn=dense.apply, params=params, tx=tx)
        if self.kind == "missing_hp":
            hp["momentum"]
        return super().init(key, hp)

    def step(self, state, batch, hp):
        if self.kind == "closure":
            grads = jax.grad(lambda p: state.apply_fn({"params": p}, batch.x).sum())(
                state.params
            )
            return state.apply_gradients(grads=grads), {"loss": jnp.zeros(())}
        state, metrics = super().step(state, batch, hp)
        if self.kind == "no_loss":
            return state, {"xent": metrics["loss"]}
        if self.kind == "vector_loss":
            return state, {"loss": jnp.zeros(batch.x.shape[0])}
        if self.kind == "dtype":
            return state._replace(
                params=[p.astype(jnp.float16) for p in state.params]
            ), metrics
        return state, metrics

    def evaluate(self, state, data, hp):
        if self.kind == "closure":
            return {"accuracy": jnp.zeros(())}
        out = super().evaluate(state, data, hp)
        if self.kind == "no_metric":
            return {"acc": out["accuracy"]}
        return out


MISTAKES = {
    "float": r"init\(\) used a traced value as a Python value .*no float\(\)",
    "if": r"init\(\) used a traced value as a Python value.*jnp.where, not if",
    "closure": r"step\(\) used a value traced in init\(\).*jaxhp.per_trial\(optax.adam\)",
    "missing_hp": r"init\(\) raised KeyError\('momentum'\).*default \(momentum=...\)",
    "no_loss": r"step\(\)'s metrics must include 'loss'.*got \['xent'\]",
    "vector_loss": r"'loss' has shape \[8\], expected a scalar \(set loss_per_row",
    "dtype": r"step\(\) returned a state unlike init\(\)'s \(\.params\[0\] is float16",
    "no_metric": r"evaluate\(\) must return the task's metric 'accuracy', got \['acc'\]",
}


@pytest.mark.parametrize("kind", sorted(MISTAKES))
def test_each_mistake_fails_before_the_sweep_with_one_line(data, kind):
    X, y = data
    hp = {"learning_rate": np.float32(0.1), "batch_size": 8, "epochs": 1}
    task = _task(data)
    with pytest.raises(TrainableError, match=MISTAKES[kind]) as e:
        check_trainable(Mistake(kind=kind), hp, task.data, metric="accuracy")
    assert "\n" not in str(e.value) and str(e.value).startswith("Mistake")
    assert check_trainable(Mistake(), hp, task.data, metric="accuracy") is None


def test_trainable_shape_mistakes_are_caught_early(data):
    X, y = data

    @dataclass  # not frozen: unhashable
    class Plain:
        width: int = 4

        def init(self, key, hp): ...
        def step(self, state, batch, hp): ...
        def evaluate(self, state, data, hp): ...

    with pytest.raises(TrainableError, match=r"Plain is not hashable.*frozen=True"):
        TrainableTask(Plain(), X, y, metric="accuracy")

    class NoStep:
        def init(self, key, hp): ...
        def evaluate(self, state, data, hp): ...

    with pytest.raises(TrainableError, match=r"NoStep has no step\(\) method"):
        TrainableTask(NoStep(), X, y, metric="accuracy")

    @dataclass(frozen=True)
    class Inherits(jaxhp.TrainableBase):  # evaluate left at the base's placeholder
        def init(self, key, hp): ...
        def step(self, state, batch, hp): ...

    hp = {"learning_rate": np.float32(0.1)}
    task = _task(data)
    with pytest.raises(TrainableError, match=r"Inherits has no evaluate\(\) method"):
        check_trainable(Inherits(), hp, task.data, metric="accuracy")
    # Through tune: the error comes from check_space, before anything compiles.
    bad = TrainableTask(
        Mistake, X, y, static=("width", "kind"), metric="accuracy", kind="float"
    )
    before = dict(jaxhp.engine.TRACE_COUNTS)
    with pytest.raises(TrainableError, match=r"Mistake\(width=4, kind='float'\)"):
        jaxhp.tune(bad, Space(learning_rate=Float(0.01, 0.1)), n_trials=1)
    assert dict(jaxhp.engine.TRACE_COUNTS) == before


def test_duck_typed_trainable_instance_still_works(data):
    """A frozen dataclass with init/step/evaluate and no base class, as before."""
    fields = {f.name: f for f in dataclasses.fields(TinyNet)}
    assert set(fields) == {"width", "depth"}
    X, y = data
    task = TrainableTask(TinyNet(8, 1), X, y, metric="accuracy", epochs=1)
    assert task.static == () and np.all(
        np.asarray(task.shape_keys({"batch_size": np.ones(3)})) == 0
    )
    res = jaxhp.tune(task, Space(learning_rate=Fixed(0.05)), n_trials=1, population=1)
    assert res.trials[0].status == "complete"


# ------------------------------------------------------------------ NNX


def test_nnx_pure_module_vmaps_over_trials():
    from flax import nnx

    class Lin(nnx.Module):
        def __init__(self, din, dout, *, rngs):
            self.lin = nnx.Linear(din, dout, rngs=rngs)

        def __call__(self, x):
            return self.lin(x)

    model = jaxhp.nnx.pure(Lin, din=4, dout=2)
    assert model == jaxhp.nnx.pure(Lin, dout=2, din=4) and hash(model)
    keys = jax.random.split(jax.random.key(0), 3)
    params, rest = jax.vmap(model.init)(keys)
    x = jnp.ones((5, 4))
    out, _ = jax.vmap(model.apply, in_axes=(0, 0, None))(params, rest, x)
    assert out.shape == (3, 5, 2)
    direct = Lin(4, 2, rngs=nnx.Rngs(keys[1]))(x)
    np.testing.assert_allclose(out[1], direct, rtol=1e-6)
    grads = jax.vmap(
        jax.grad(lambda p, r: model.apply(p, r, x)[0].sum()), in_axes=(0, 0)
    )(params, rest)
    assert jax.tree.structure(grads) == jax.tree.structure(params)


# ------------------------------------------------------------------ examples


def test_custom_cnn_example_runs_several_buckets():
    from examples.custom_cnn import main

    res = main(n_trials=2, population=2, epochs=2, channels=(4, 8), depths=(1,))
    configs = {(t.params["channels"], t.params["depth"]) for t in res.trials}
    assert len(res) == 2 and res.stats["buckets"] == len(configs)
    assert res.best_value > 0.3
    assert res.predict(np.zeros((3, 64))).shape == (3, 10)


def test_nnx_example_runs():
    from examples.nnx_mlp import main

    res = main(n_trials=2, population=2, epochs=2, hidden=(16,))
    assert len(res) == 2 and res.best_value > 0.3
    assert res.predict(np.zeros((3, 64))).shape == (3, 10)
