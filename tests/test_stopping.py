"""Each stopper against a small hand-computed example, and stoppers in a real sweep."""

import numpy as np
import pytest

import jaxhp
from jaxhp.stopping import (
    ASHA,
    Hyperband,
    Median,
    Patience,
    Percentile,
    Report,
    SuccessiveHalving,
    Threshold,
)

from .conftest import tiny_space


def report(values, epoch, valid=None, raw=None):
    v = np.asarray(values, np.float32)
    return Report(
        v,
        v if raw is None else np.asarray(raw, np.float32),
        np.ones(v.shape, bool) if valid is None else np.asarray(valid),
        np.full(v.shape, epoch, np.int32),
    )


def test_patience():
    p = Patience(2)
    s = p.init(2)
    stops = []
    for vals in ([0.5, 0.5], [0.6, 0.4], [0.7, 0.4], [0.7, 0.4]):
        s, stop = p.update(s, report(vals, 0))
        stops.append(np.asarray(stop).tolist())
    # trial 1 never beats 0.5 after epoch 0: waits 1, 2 -> stops at the third report
    assert stops == [[False, False], [False, False], [False, True], [False, True]]


def test_median_and_percentile():
    m = Median(warmup=1, min_trials=3)
    s = m.init(5)
    # Epoch 0: warm-up, nobody stops (even the worst).
    s, stop = m.update(s, report([0.1, 0.2, 0.3, 0.4, 0.5], 0))
    assert not np.any(stop)
    # Epoch 1: current values 0.15, 0.25, 0.35, 0.45, (invalid); median of the four
    # valid = 0.30. Best so far: 0.15, 0.25, 0.35, 0.45, 0.5 -> trials 0 and 1 stop.
    s, stop = m.update(
        s, report([0.15, 0.25, 0.35, 0.45, 9.0], 1, valid=[1, 1, 1, 1, 0])
    )
    assert np.asarray(stop).tolist() == [True, True, False, False, False]
    # Too few trials: nothing stops.
    s2 = m.init(2)
    _, stop = m.update(s2, report([0.1, 0.9], 5))
    assert not np.any(stop)
    # Keep the top 25%: the cut is the 75th percentile of 1..8 = 6.25.
    p = Percentile(25.0, min_trials=1)
    _, stop = p.update(p.init(8), report(np.arange(1, 9), 0))
    assert np.asarray(stop).tolist() == [True] * 6 + [False, False]


def test_median_keeps_stopped_trials_in_the_reference():
    # A stopped trial stays in the median at the value it last reported, so Median
    # stops the worse half once rather than halving the survivors every epoch.
    m = Median(warmup=0, min_trials=1)
    s = m.init(8)
    base = np.linspace(0.1, 0.8, 8)
    s, stop = m.update(s, report(base, 0))  # median 0.45
    assert np.asarray(stop).tolist() == [True] * 4 + [False] * 4
    running = [0, 0, 0, 0, 1, 1, 1, 1]
    # Epoch 1: the survivors' 0.51..0.81 against the stopped 0.1..0.4: the median of
    # all eight latest values is 0.455, and nobody stops (the survivors alone would
    # have cut at 0.66 and stopped two more).
    s, stop = m.update(s, report(base + 0.01, 1, valid=running))
    assert not np.any(stop)
    # Later epochs stop a survivor only if its best falls below that median:
    # trial 4 stays at 0.51 while the others climb, and is still above it.
    s, stop = m.update(
        s, report(np.r_[base[:4], 0.5, base[5:] + 0.3], 2, valid=running)
    )
    assert not np.any(stop)


def test_median_in_a_sweep_stops_about_half(clf_task):
    space = tiny_space(epochs=jaxhp.Fixed(8), width=jaxhp.Fixed(8))
    res = jaxhp.tune(
        clf_task,
        space,
        "random",
        n_trials=16,
        population=16,
        early_stopping=Median(warmup=1),
        seed=0,
    )
    stopped = res.summary()["stopped"]
    assert 4 <= stopped <= 11, stopped


def test_threshold():
    t = Threshold(lower=0.2, upper=0.9, warmup=1)
    raw = [0.1, 0.5, 0.95, np.nan]
    _, stop = t.update(None, report([0, 0, 0, 0], 0, raw=raw))
    assert not np.any(stop)  # warm-up
    _, stop = t.update(None, report([0, 0, 0, 0], 1, raw=raw))
    assert np.asarray(stop).tolist() == [True, False, True, True]
    with pytest.raises(ValueError):
        Threshold()


def test_successive_halving_rungs_and_history():
    sh = SuccessiveHalving(min_resource=1, eta=3)
    assert ASHA is SuccessiveHalving
    st = sh.init(9)
    vals = [0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.8, 0.4, 0.6]
    # after 1 epoch (rung 1 = 1 * 3**0): 9 results -> the best 9 // 3 = 3 go on
    st, stop = sh.update(st, report(vals, 0))
    assert np.flatnonzero(~np.asarray(stop)).tolist() == [0, 3, 6]
    # after 2 epochs: not a rung -> nobody stops
    st, stop = sh.update(st, report(vals, 1))
    assert not np.any(stop)
    # after 3 epochs: the 3 survivors reach rung 3 -> max(3 // 3, 1) = 1 goes on
    valid = [1, 0, 0, 1, 0, 0, 1, 0, 0]
    st, stop = sh.update(st, report(vals, 2, valid=valid))
    assert np.flatnonzero(np.asarray(stop)).tolist() == [3, 6]
    # 4 trials reach rung 9 together (NaN never goes on): only the best of 4 goes on
    st, stop = sh.update(st, report([0.4, np.nan, 0.9, 0.1], 8, valid=[1, 1, 1, 1]))
    assert np.asarray(stop).tolist() == [True, True, False, True]
    # ASHA: later arrivals at rung 9 are ranked against everything recorded there.
    # 0.5 alone: 5 results, keep 5 // 3 = 1, and 0.9 is better -> stops; 0.95 goes on.
    st, stop = sh.update(st, report([0.5], 8))
    assert np.asarray(stop).tolist() == [True]
    st, stop = sh.update(st, report([0.95], 8))
    assert np.asarray(stop).tolist() == [False]
    assert int(st.count[2]) == 6  # rung 9 has recorded six results


def test_hyperband_brackets():
    hb = Hyperband(min_resource=1, max_resource=9, eta=3)
    assert hb.s_max == 2
    # Li et al.: n_s for s = 2, 1, 0 is 9, 5 (ceil(3/2*3)), 3 -> brackets b = 0, 1, 2
    assert hb.bracket_sizes().tolist() == [9.0, 5.0, 3.0]
    b = hb.brackets(17)
    assert np.bincount(b).tolist() == [9, 5, 3]
    state = hb.init(17)
    vals = np.linspace(0.0, 1.0, 17)
    # After 1 epoch only bracket 0 (first rung 1) halves: keeps its best 9 // 3 = 3.
    _, stop = hb.update(state, report(vals, 0))
    stop = np.asarray(stop)
    assert stop[b == 0].sum() == 6 and not stop[b != 0].any()
    # After 3 epochs brackets 0 (rung 3) and 1 (rung 3) halve; bracket 2 (rung 9) not.
    _, stop = hb.update(state, report(vals, 2))
    stop = np.asarray(stop)
    assert stop[b == 1].sum() == 5 - 1 and stop[b == 0].sum() == 6
    assert not stop[b == 2].any()


def test_composition_and_use_in_a_sweep(clf_task):
    both = Patience(3) | Median(warmup=1, min_trials=2)
    assert len(both.stoppers) == 2
    assert len((both | Threshold(lower=0.0)).stoppers) == 3
    space = tiny_space(epochs=jaxhp.Fixed(9), width=jaxhp.Fixed(8))
    res = jaxhp.tune(
        clf_task,
        space,
        "random",
        n_trials=9,
        population=9,
        early_stopping=SuccessiveHalving(min_resource=1, eta=3),
        seed=0,
    )
    # 9 trials: 3 pass the rung at epoch 1, 1 passes the rung at epoch 3.
    runs = sorted(t.epochs_run for t in res.trials if t.status != "diverged")
    assert runs.count(9) <= 1 and sum(r == 1 for r in runs) >= 5
    assert res.summary()["stopped"] >= 7


def test_comparison_sets_do_not_depend_on_what_was_compiled(clf_task, monkeypatch):
    # Under a stopper that compares a bucket's trials, the buckets are the comparison
    # sets: their plan may not lean on the shapes this process happened to compile
    # (a resumed study, in a fresh process, must stop what an uninterrupted one does).
    from jaxhp.engine import DEFAULT_CACHE

    space = tiny_space(epochs=jaxhp.Fixed(4), width=jaxhp.Fixed(8))
    run = dict(
        task=clf_task,
        space=space,
        strategy="random",
        n_trials=9,
        population=9,
        seed=0,
        early_stopping=SuccessiveHalving(min_resource=1, eta=3),
    )
    monkeypatch.setattr(DEFAULT_CACHE, "seen", set())
    fresh = jaxhp.tune(**run)
    # Compile each power-of-two bucket's shape, which "auto" would no longer merge.
    jaxhp.tune(**{**run, "early_stopping": Patience(2)}, bucketing="pow2")
    again = jaxhp.tune(**run)
    assert fresh.stats["buckets"] == again.stats["buckets"] == 1
    outcome = [(t.epochs_run, t.status) for t in fresh.trials]
    assert outcome == [(t.epochs_run, t.status) for t in again.trials]
