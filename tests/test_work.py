"""Useful-work accounting, compaction and shape-aware recycling: what a population
program computed against what its trials needed, and trials that stay the trials
trained alone when the engine saves work."""

import numpy as np
import pytest

import jaxhp
from jaxhp import engine
from jaxhp.engine import run_population, work
from jaxhp.stopping import Patience

from .conftest import tiny_space


@pytest.fixture
def own_task(small_digits):
    # A task of this module's own: a sweep sets the task's space-wide shapes.
    X, y = small_digits
    return jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.25, seed=0)


def two_trial_space():
    return jaxhp.Space(
        n_layers=jaxhp.Int(1, 2),
        width=jaxhp.Choice([8, 16]),
        batch_size=jaxhp.Choice([32, 64]),
        epochs=jaxhp.Int(2, 3),
        learning_rate=jaxhp.Fixed(0.01),
    )


A = dict(n_layers=1, width=8, batch_size=32, epochs=2)
B = dict(n_layers=2, width=16, batch_size=64, epochs=3)


def test_work_adds_up_on_a_hand_computed_sweep(own_task):
    """Two trials in one bucket (depth 2, width 16, batch 64, 10 steps of the
    batch-32 trial, 300 training rows, 64 features, 10 classes), no stopper: trial A
    (1 x 8, batch 32) trains 2 epochs, B (2 x 16, batch 64) 3; the program runs 3."""
    assert int(own_task.data.n_train.sum()) == 300
    res = jaxhp.tune(
        own_task,
        two_trial_space(),
        "random",
        n_trials=2,
        population=2,
        enqueue=[A, B],
        bucketing="none",
    )
    w = res.stats["work"]
    fp = 6 * (64 * 16 + 16 * 16 + 16 * 10)  # the bucket's network, per row
    fa = 6 * (64 * 8 + 8 * 10)  # trial A's own
    assert w["unit"] == "flop"
    assert w["executed"] == 3 * 2 * 10 * 64 * fp  # 3 epochs x 2 slots x S x B
    assert w["useful"] == 300 * (2 * fa + 3 * fp)
    assert w["pad_shape"] == 300 * 2 * (fp - fa)
    assert w["pad_rows"] == 5 * (10 * 64 - 300) * fp  # 5 slot-epochs trained
    assert w["frozen"] == 1 * 10 * 64 * fp  # A's slot in epoch 3
    parts = w["useful"] + w["pad_shape"] + w["pad_rows"] + w["frozen"]
    assert parts == pytest.approx(w["executed"], rel=1e-12)
    assert w["ratio"] == pytest.approx(w["executed"] / w["useful"])
    assert w["compile_s"] == pytest.approx(res.stats["compile_time"])
    assert "executed" in work.describe(w)


def test_trial_flops_of_a_full_trial_are_the_buckets(own_task):
    space = two_trial_space()
    own_task.check_space(space)
    hp = own_task.hparams(space, space.from_python([B]))
    tr = own_task.trainable(hp)
    assert own_task.trial_flops_per_row(tr, hp)[0] == own_task.flops_per_row(tr)


def eager_options(**over):
    """CPU options whose cost model always finds compaction worth a compile."""
    cost = engine.CostModel(compile_s=0.0, step_s=0.0, flops=1.0)
    return engine.EngineOptions.for_platform("cpu", cost=cost, **over)


def assert_same_trials(got, want):
    """Statuses and epochs exactly; values within the float rounding that a different
    population size brings on a CPU (a metric's mean may differ by an ulp, which can
    move the best epoch between two tied epochs only)."""
    assert [o.trial_id for o in got] == [o.trial_id for o in want]
    for g, w in zip(got, want, strict=True):
        assert (g.status, g.epochs_run) == (w.status, w.epochs_run)
        if g.best_epoch != w.best_epoch:
            v = w.curves["value"]
            assert v[g.best_epoch] == pytest.approx(v[w.best_epoch], rel=1e-5)
        np.testing.assert_allclose(g.value, w.value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            g.curves["train_loss"], w.curves["train_loss"], rtol=1e-4, atol=1e-6
        )


def test_compaction_leaves_every_trial_as_trained_alone(clf_task):
    space = tiny_space(epochs=jaxhp.Int(1, 9), width=jaxhp.Fixed(8))
    clf_task.check_space(space)
    u = np.random.default_rng(1).random((8, space.dim))
    hp = clf_task.hparams(space, space.decode(u))
    ids = np.arange(8)
    common = dict(seed=4, stopper=Patience(2), segment_epochs=2, bucketing="none")
    opts = eager_options()
    plain, _, best0 = run_population(
        clf_task, hp, ids, compact=False, options=opts, **common
    )
    packed, (rep,), best1 = run_population(
        clf_task, hp, ids, compact=True, options=opts, **common
    )
    assert len(rep.sizes) >= 2 and rep.sizes[0] == 8 and rep.sizes[-1] < 8
    assert_same_trials(list(packed), list(plain))
    assert best1.trial_id == best0.trial_id
    for o in list(packed)[:3]:  # and each equals the trial alone
        one = {k: v[o.trial_id : o.trial_id + 1] for k, v in hp.items()}
        (alone,), _, _ = run_population(
            clf_task, one, np.asarray([o.trial_id]), **common
        )
        assert_same_trials([o], [alone])
    # Compaction executed less for the same useful work.
    _, (rep0,), _ = run_population(
        clf_task, hp, ids, compact=False, options=opts, **common
    )
    assert rep.useful == pytest.approx(rep0.useful)
    assert rep.executed < rep0.executed


def test_shape_aware_recycling_routes_trials_and_leaves_them_as_alone(clf_task):
    space = tiny_space(
        epochs=jaxhp.Int(1, 4),
        width=jaxhp.Choice([8, 64]),
        n_layers=jaxhp.Fixed(1),
        optimizer=jaxhp.Fixed("adam"),
    )
    opts = eager_options()
    res = jaxhp.tune(
        clf_task,
        space,
        "sobol",
        n_trials=10,
        population=4,
        seed=5,
        recycle="shape",
        early_stopping=Patience(2),
        engine_options=opts,
    )
    assert sorted(t.trial_id for t in res.trials) == list(range(10))
    assert res.stats["plan"]["recycle"] == "shape"
    assert res.stats["buckets"] >= 2  # a stream per shape bucket (at least two)
    for t in res.trials:
        hp = clf_task.hparams(space, space.from_python([t.params]))
        (alone,), _, _ = run_population(
            clf_task, hp, np.asarray([t.trial_id]), seed=5, stopper=Patience(2)
        )
        assert (alone.status, alone.epochs_run) == (t.status, t.epochs_run)
        np.testing.assert_allclose(alone.value, t.value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            alone.curves["train_loss"], t.curves["train_loss"], rtol=1e-4, atol=1e-6
        )
    w = res.stats["work"]
    parts = w["useful"] + w["pad_shape"] + w["pad_rows"] + w["frozen"]
    assert parts == pytest.approx(w["executed"])


def test_shape_streams_execute_less_than_a_whole_space_program(clf_task):
    space = tiny_space(
        epochs=jaxhp.Int(2, 4), width=jaxhp.Choice([8, 128]), n_layers=jaxhp.Fixed(1)
    )
    work_of = {}
    for mode in ("whole", "shape"):
        res = jaxhp.tune(
            clf_task, space, "sobol", n_trials=8, population=4, seed=1, recycle=mode
        )
        work_of[mode] = res.stats["work"]
    assert work_of["shape"]["useful"] == pytest.approx(work_of["whole"]["useful"])
    assert work_of["shape"]["ratio"] < work_of["whole"]["ratio"]
