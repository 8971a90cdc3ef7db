"""Slot recycling: a refilled slot's trial is the trial trained alone; no recompiles."""

import numpy as np

import jaxhp
from jaxhp import engine
from jaxhp.engine import run_population
from jaxhp.stopping import SuccessiveHalving

from .conftest import tiny_space


def test_recycled_trials_equal_trials_trained_alone(clf_task):
    space = tiny_space(epochs=jaxhp.Int(1, 5), width=jaxhp.Choice([8, 16]))
    engine.TRACE_COUNTS.clear()
    seen = []
    res = jaxhp.tune(
        clf_task,
        space,
        "sobol",
        n_trials=11,
        population=4,
        seed=3,
        recycle=True,
        callback=seen.append,
    )
    # Every started trial is in the results, once, and the strategy heard them in
    # several batches (slots were refilled as trials finished).
    assert sorted(t.trial_id for t in res.trials) == list(range(11))
    assert len(seen) >= 3 and sum(map(len, seen)) == 11
    # One compiled segment for the whole stream: refills recompile nothing.
    assert sum(engine.TRACE_COUNTS.values()) == 1
    # Each trial equals the same trial (id, key, hyperparameters) trained alone.
    for t in res.trials:
        hp = clf_task.hparams(space, space.from_python([t.params]))
        (alone,), _, _ = run_population(clf_task, hp, np.asarray([t.trial_id]), seed=3)
        assert alone.status == t.status and alone.epochs_run == t.epochs_run
        np.testing.assert_allclose(alone.value, t.value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            alone.curves["train_loss"], t.curves["train_loss"], rtol=1e-4, atol=1e-6
        )
    assert res.best_trial is not None and res.predict(np.zeros((2, 64))).shape == (2,)


def test_recycling_with_a_pruner_and_bayes(clf_task):
    space = tiny_space(epochs=jaxhp.Fixed(9), width=jaxhp.Fixed(8))
    res = jaxhp.tune(
        clf_task,
        space,
        "bayes",
        n_trials=12,
        population=4,
        seed=0,
        recycle=True,
        early_stopping=SuccessiveHalving(min_resource=1, eta=2),
    )
    assert len(res) == 12
    assert res.summary()["stopped"] >= 4  # pruned at rungs, slots reused
