"""Useful-work accounting, compaction and shape-aware recycling: what a population
program computed against what its trials needed, and trials that stay the trials
trained alone when the engine saves work."""

import numpy as np
import pytest

import jaxhp
from jaxhp.engine import work


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
