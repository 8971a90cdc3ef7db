"""Population-based training: exact exploit, recorded lineage, schedules."""

import jax
import numpy as np
import pytest

import jaxhp
from jaxhp import Fixed, Float, Space


def test_pbt_exploits_exact_state_and_records_lineage(clf_task):
    space = Space(
        learning_rate=Float(1e-4, 1.0, log=True),
        weight_decay=Float(1e-6, 1e-2, log=True),
        width=Fixed(16),
        batch_size=Fixed(64),
        optimizer=Fixed("sgd"),
    )
    copies = []

    def check(before, after, src):
        moved = np.flatnonzero(src != np.arange(src.size))
        assert moved.size > 0
        for dst in moved:
            for a, b in zip(
                jax.tree.leaves(after), jax.tree.leaves(before), strict=True
            ):
                np.testing.assert_array_equal(
                    np.asarray(a[dst]), np.asarray(b[src[dst]])
                )
        copies.append(moved.size)

    res = jaxhp.pbt(
        clf_task,
        space,
        population=8,
        generations=4,
        interval=1,
        quantile=0.25,
        seed=0,
        _on_exploit=check,
    )
    assert len(res) == 8 and copies == [2, 2, 2]
    assert len(res.lineage) == 6 and res.stats["exploits"] == 6
    for ex in res.lineage:
        assert ex.source != ex.trial
        # the explored learning rate comes from the source's, perturbed or resampled
        assert ex.params_after["width"] == 16
    # Each trial's learning-rate schedule is in its curves, one value per epoch; an
    # exploited trial's changes at its exploit epoch.
    ex = res.lineage[0]
    lr = res.trials[ex.trial].curves["learning_rate"]
    assert lr.shape == (4,) and lr[ex.epoch] != lr[ex.epoch - 1]
    assert res.best_trial is not None and res.predict(np.zeros((3, 64))).shape == (3,)


def test_pbt_refuses_shape_hyperparameters(clf_task):
    with pytest.raises(ValueError, match="width is searched"):
        jaxhp.pbt(clf_task, Space(width=jaxhp.Int(8, 16)), population=4)
    with pytest.raises(ValueError, match="quantile"):
        jaxhp.pbt(clf_task, Space(learning_rate=Float(1e-3, 1e-1)), quantile=0.9)
