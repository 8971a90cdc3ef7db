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


def test_recycled_slots_train_the_same_under_either_epoch_loop(clf_task):
    """Accelerators run a stopper-free segment's epochs as a fixed-count loop: with
    recycled slots, whose trials start and finish mid-segment (segments of 3 epochs,
    budgets of 1-5), it trains every trial as the CPU's while loop does, bit for bit."""
    space = tiny_space(epochs=jaxhp.Int(1, 5), width=jaxhp.Fixed(8))
    runs = []
    for static in (False, True):
        options = engine.EngineOptions.for_platform("cpu", static_epoch_loop=static)
        runs.append(
            jaxhp.tune(
                clf_task,
                space,
                "sobol",
                engine_options=options,
                n_trials=9,
                population=4,
                seed=2,
                recycle=True,
                segment_epochs=3,
            ).trials
        )
    assert len({t.params["epochs"] for t in runs[0]}) > 2
    for a, b in zip(*runs, strict=True):
        assert (a.trial_id, a.status, a.epochs_run) == (
            b.trial_id,
            b.status,
            b.epochs_run,
        )
        np.testing.assert_array_equal(a.curves["train_loss"], b.curves["train_loss"])
        assert a.value == b.value
