"""The public population program (jaxhp.engine.Population) driven by hand."""

import importlib.util
import pathlib

import jax
import numpy as np

import jaxhp
from jaxhp import Choice, Fixed, Space
from jaxhp.engine import Population, run_population

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_successive_halving_example_runs():
    out = _example("successive_halving").main(n=4, rung_epochs=1)
    assert 0 <= out["trial"] < 4 and 0.0 < out["value"] <= 1.0
    assert set(out["params"]) == {"learning_rate", "width", "batch_size", "epochs"}


def _space():
    return Space(
        learning_rate=Choice([0.003, 0.03, 0.1]),
        width=Fixed(8),
        n_layers=Fixed(1),
        batch_size=Fixed(32),
        epochs=Fixed(4),
    )


def test_stopped_refilled_and_copied_slots_keep_the_engine_invariants(clf_task):
    """A trial stopped by hand keeps its state and best epoch; a trial refilled into a
    freed slot mid-stream equals the same trial trained alone; copy_slots copies a
    slot's whole state, bit for bit."""
    space = _space()
    clf_task.check_space(space)
    hp = clf_task.hparams(space, space.from_python([{"learning_rate": 0.03}] * 3))
    pop = Population(clf_task, hp, size=2, seed=7, segment_epochs=2)
    pop.start([0, 1], {k: v[:2] for k, v in hp.items()})
    assert pop.train() == 2
    before = jax.device_get(jax.tree.map(lambda a: a[0], pop.run.tstate))
    pop.stop([0])
    assert pop.active.tolist() == [False, True]
    pop.train()  # slot 1 finishes its 4 epochs; slot 0 stays as it was
    after = jax.device_get(jax.tree.map(lambda a: a[0], pop.run.tstate))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    stopped, finished = pop.outcomes([0, 1])
    assert (stopped.status, stopped.epochs_run) == ("stopped", 2)
    assert (finished.status, finished.epochs_run) == ("complete", 4)
    # Trial 2 started in slot 0 after two segments trains as it would alone.
    pop.release([0, 1])
    pop.refill([0], [2], {k: v[2:] for k, v in hp.items()})
    while pop.active.any():
        pop.train()
    (refilled,) = pop.outcomes([0])
    alone_hp = {k: v[2:] for k, v in hp.items()}
    (alone,), _, _ = run_population(
        clf_task, alone_hp, np.array([2]), seed=7, segment_epochs=2
    )
    # Alone is a population of one: XLA may vectorise its sums otherwise (float
    # rounding), as the recycle tests allow.
    assert refilled.trial_id == 2 and refilled.epochs_run == alone.epochs_run
    np.testing.assert_allclose(refilled.value, alone.value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        refilled.curves["train_loss"], alone.curves["train_loss"], rtol=1e-4, atol=1e-6
    )
    jax.tree.map(
        np.testing.assert_array_equal,
        pop.best_state(0),
        jax.device_get(jax.tree.map(lambda a: a[0], pop.run.best)),
    )
    pop.copy_slots(np.array([0, 0]))
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.device_get(jax.tree.map(lambda a: a[0], pop.run.tstate)),
        jax.device_get(jax.tree.map(lambda a: a[1], pop.run.tstate)),
    )


def test_a_sweep_tells_its_observers_in_order(clf_task):
    events = []

    class Log(jaxhp.Observer):
        def round_started(self, rnd, n):
            events.append(("start", rnd, n))

        def trials_finished(self, trials, record):
            events.append(("done", record.round, len(trials), record.started))

        def close(self):
            events.append(("close",))

    sweep = jaxhp.Sweep(clf_task, _space(), "random", n_trials=5, population=3)
    res = sweep.run([Log()])
    assert len(res) == 5
    assert events == [
        ("start", 0, 3),
        ("done", 0, 3, 3),
        ("start", 1, 2),
        ("done", 1, 2, 5),
        ("close",),
    ]
