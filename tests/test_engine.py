"""Invariants of the population engine (see DESIGN.md, "House habits")."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhp
from jaxhp import Choice, Fixed, Float, Space
from jaxhp.engine import TRACE_COUNTS, EngineOptions, ProgramCache, run_population
from jaxhp.engine.planning import bucket_spec
from tests.conftest import tiny_space


def _hp(task, space, configs):
    return task.hparams(space, space.from_python(configs))


def _fixed_space(**values):
    return Space(**{k: Fixed(v) for k, v in values.items()})


def _assert_same_trials(outs_a, outs_b, best_a, best_b, **tolerance):
    """Two runs trained the same trials: statuses, epochs, every curve, the fold
    values and the best state agree, bit for bit unless a ``tolerance`` is given."""

    def same(x, y):
        if tolerance:
            np.testing.assert_allclose(x, y, **tolerance)
        else:
            np.testing.assert_array_equal(x, y)

    for a, b in zip(outs_a, outs_b, strict=True):
        assert (a.status, a.epochs_run, a.best_epoch) == (
            b.status,
            b.epochs_run,
            b.best_epoch,
        )
        assert a.curves.keys() == b.curves.keys()
        for k in a.curves:
            same(a.curves[k], b.curves[k])
        same(a.fold_values, b.fold_values)
    assert best_a.trial_id == best_b.trial_id
    jax.tree.map(same, best_a.state, best_b.state)


def test_trial_in_a_population_equals_the_trial_alone(clf_task):
    space = tiny_space()
    res = jaxhp.tune(
        clf_task, space, "random", n_trials=12, population=12, seed=3, bucketing="none"
    )
    for t in res.trials[:3]:
        hp = _hp(clf_task, space, [t.params])
        (alone,), _, _ = run_population(clf_task, hp, np.array([t.trial_id]), seed=3)
        assert alone.status == t.status and alone.epochs_run == t.epochs_run
        np.testing.assert_allclose(
            alone.curves["train_loss"], t.curves["train_loss"], rtol=2e-4, atol=1e-6
        )
        np.testing.assert_allclose(alone.value, t.value, atol=1e-6)


@pytest.mark.parametrize("population", [2, 5])
def test_same_seed_same_results_whatever_the_population(clf_task, population):
    space = tiny_space()
    ref = jaxhp.tune(clf_task, space, "sobol", n_trials=10, population=10, seed=1)
    other = jaxhp.tune(
        clf_task, space, "sobol", n_trials=10, population=population, seed=1
    )
    for a, b in zip(ref.trials, other.trials, strict=True):
        assert a.params == b.params and a.status == b.status
        np.testing.assert_allclose(
            a.curves["train_loss"], b.curves["train_loss"], rtol=2e-4, atol=1e-6
        )
        np.testing.assert_allclose(a.value, b.value, atol=1e-6)


def test_hyperparameters_put_on_the_device_train_the_same(clf_task):
    """A round's hyperparameters passed to each call as NumPy, packed into one matrix
    (the default, ``PACK_HOST_ROWS``) or a leaf each, or put on the device once
    (``HP_DEVICE_PUT``) and shared by the initial-state program and every segment: the
    same trials bit for bit, over several segments."""
    space = tiny_space(epochs=Fixed(3))
    u = np.random.default_rng(0).random((3, space.dim))
    task_hp = clf_task.hparams(space, space.decode(u))
    runs = []
    for put, pack in ((False, True), (False, False), (True, True)):
        options = EngineOptions.for_platform(
            "cpu", hp_device_put=put, pack_host_rows=pack
        )
        runs.append(
            run_population(
                clf_task,
                task_hp,
                np.arange(3),
                seed=2,
                segment_epochs=1,
                options=options,
            )[0]
        )
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a.curves["train_loss"], b.curves["train_loss"])
        assert a.value == b.value and a.epochs_run == b.epochs_run
    for a, b in zip(runs[0], runs[2], strict=True):
        np.testing.assert_array_equal(a.curves["train_loss"], b.curves["train_loss"])
        assert a.value == b.value and a.epochs_run == b.epochs_run


def test_a_step_may_return_its_loss_as_per_row_terms(small_digits):
    """The built-in MLP's step returns its loss as per-row terms that the engine sums
    once per epoch; a step returning the scalar sum (what a user's Trainable may do)
    trains the same trials: the same weights, so the same validation values, and the
    same training losses up to summation order."""
    X, y = small_digits
    space = tiny_space(epochs=Fixed(3))
    u = np.random.default_rng(3).random((4, space.dim))
    runs = []
    for scalar in (False, True):
        task = jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.25, seed=0)
        if scalar:
            make = task.trainable
            task.trainable = lambda hp, make=make: _ScalarLossMLP(
                **dataclasses.asdict(make(hp))
            )
        task.check_space(space)
        hp = task.hparams(space, space.decode(u))
        runs.append(run_population(task, hp, np.arange(4), seed=0)[0])
    for a, b in zip(*runs, strict=True):
        assert a.value == b.value and a.best_epoch == b.best_epoch
        np.testing.assert_array_equal(a.curves["value"], b.curves["value"])
        np.testing.assert_allclose(
            a.curves["train_loss"], b.curves["train_loss"], rtol=1e-5
        )


@dataclasses.dataclass(frozen=True)
class _ScalarLossMLP(jaxhp.tasks.mlp.MLPTrainable):
    loss_per_row = False

    def step(self, state, batch, hp):
        state, metrics = super().step(state, batch, hp)
        assert metrics["loss"].shape == batch.mask.shape  # per-row terms
        return state, {"loss": jnp.sum(metrics["loss"])}


def test_segment_compiler_options_reach_the_compiler(clf_task):
    """``SEGMENT_COMPILER_OPTIONS`` (per platform) compile the segment with those XLA
    options, as a program of its own: a valid one trains the same trial, an invalid
    one fails in XLA's option parser (so it was handed over)."""
    space = tiny_space(epochs=Fixed(1), n_layers=Fixed(1), width=Fixed(8))
    hp = clf_task.hparams(space, space.decode(np.full((1, space.dim), 0.5)))
    ref = run_population(clf_task, hp, np.arange(1), seed=0)[0][0]
    option = "xla_gpu_enable_command_buffer"  # a GPU option: the CPU ignores it

    def with_option(value):
        options = EngineOptions.for_platform("cpu", compiler_options={option: value})
        return run_population(clf_task, hp, np.arange(1), seed=0, options=options)

    same = with_option("WHILE")[0][0]
    assert same.value == ref.value
    np.testing.assert_array_equal(same.curves["train_loss"], ref.curves["train_loss"])
    with pytest.raises(Exception, match=option):
        with_option("NOPE")


def test_host_rows_pack_per_trial_arrays_bit_for_bit():
    """The per-trial host arrays of a program call packed into one ``uint32`` matrix
    come back inside a program with their dtypes, shapes and bits (NaN payloads, -0.0,
    subnormals, the top bit of a uint32); what cannot be packed (another width, a
    device array) passes through as it is."""
    from jaxhp.engine.transfer import HostRows, host_rows, unrows

    nan_payload = np.array([0x7FC00123], np.uint32).view(np.float32)[0]
    tree = (
        np.array([0, 1, 2**31, 2**32 - 1], np.uint32),
        {
            "lr": np.array([nan_payload, -0.0, 1e-42, np.inf], np.float32),
            "w": np.arange(8, dtype=np.int32).reshape(4, 2) - 5,
        },
        np.array([True, False, True, True]),
    )
    rows = host_rows(tree)
    assert isinstance(rows, HostRows) and rows.words.shape == (4, 5)
    back = jax.jit(unrows)(rows)
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    for x, y in zip(jax.tree.leaves(tree), jax.tree.leaves(back), strict=True):
        y = np.asarray(y)
        assert (x.dtype, x.shape) == (y.dtype, y.shape)
        np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))
    for other in ({"h": np.zeros(3, np.float16)}, {"h": jnp.zeros(3)}):
        assert host_rows(other) is other
    # Shapes pack to shapes (the memory model traces the programs with them).
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
    assert host_rows(shapes).words == jax.ShapeDtypeStruct((4, 5), np.uint32)


def test_the_fixed_count_epoch_loop_trains_as_the_while_loop(clf_task):
    """Accelerators run a stopper-free segment's epochs as a loop of a fixed count
    (no condition read back per epoch); the CPU as a ``while_loop``. Forced on the CPU,
    both give the same trials bit for bit: mixed epoch budgets (the segment outlives
    the short trials, and the last segment is shorter than ``segment_epochs``), a
    diverging trial, the best state. (Which epochs validate, ``eval_every``, is decided
    inside the epoch, the same under either loop.)"""
    space = _fixed_space(width=16, n_layers=2, batch_size=32, optimizer="sgd")
    space = Space(
        **space, learning_rate=Choice([0.003, 0.03, 1e6]), epochs=Choice([2, 5, 7])
    )
    configs = [
        {"learning_rate": lr, "epochs": ep}
        for lr, ep in ((0.03, 2), (0.003, 7), (1e6, 5), (0.03, 5))
    ]
    hp = _hp(clf_task, space, configs)
    ids = np.arange(4)
    runs = []
    for static in (False, True):
        options = EngineOptions.for_platform("cpu", static_epoch_loop=static)
        cache = ProgramCache()  # every program traced afresh
        TRACE_COUNTS.clear()
        outs, reports, best = run_population(
            clf_task, hp, ids, seed=4, segment_epochs=3, options=options, cache=cache
        )
        assert reports[0].segments == 3  # 3 + 3 + 1 epochs
        runs.append((outs, best))
    # The short last segment (1 epoch of 3) ran the while loop's program: a fixed
    # count would have run two masked epochs for nothing.
    assert {s.static_epochs for s in TRACE_COUNTS} == {True, False}
    (a_outs, a_best), (b_outs, b_best) = runs
    assert [o.status for o in a_outs] == [
        "complete",
        "complete",
        "diverged",
        "complete",
    ]
    _assert_same_trials(a_outs, b_outs, a_best, b_best)
    # A bucket whose every trial diverges in its first epoch ends there, both ways.
    for static in (False, True):
        options = EngineOptions.for_platform("cpu", static_epoch_loop=static)
        hp_bad = _hp(clf_task, space, [{"learning_rate": 1e6, "epochs": 7}] * 4)
        outs, reports, _ = run_population(
            clf_task, hp_bad, ids, seed=4, segment_epochs=3, options=options
        )
        assert [o.status for o in outs] == ["diverged"] * 4
        assert reports[0].segments == 1
    # With the engine's own settings, the spec says which loop a segment compiles to:
    # a fixed count on a GPU without a stopper, the while loop with one or on a CPU.
    gpu, cpu = EngineOptions.for_platform("gpu"), EngineOptions.for_platform("cpu")
    assert bucket_spec(clf_task, hp, 3, None, gpu)[1].static_epochs
    assert not bucket_spec(clf_task, hp, 3, None, cpu)[1].static_epochs
    patience = jaxhp.stopping.Patience(2)
    assert not bucket_spec(clf_task, hp, 3, patience, gpu)[1].static_epochs


@pytest.mark.parametrize("stopper", [None, "patience"])
def test_freezing_in_every_step_trains_as_the_epoch_end_revert(clf_task, stopper):
    """Accelerators keep a trial that is not training as it is in every step; the CPU
    lets it train along and puts it back at the epoch's end (``FREEZE_IN_STEP``).
    Forced on the CPU, both give the same trials and the same final states bit for bit:
    mixed epoch budgets, mixed batch sizes (trials that idle for part of an epoch), a
    diverging trial (which keeps the state it reached), a stopper."""
    space = _fixed_space(width=16, n_layers=2, optimizer="sgd")
    space = Space(
        **space,
        learning_rate=Choice([0.003, 0.03, 1e6]),
        epochs=Choice([2, 5, 7]),
        batch_size=Choice([32, 64]),
    )
    configs = [
        {"learning_rate": lr, "epochs": ep, "batch_size": b}
        for lr, ep, b in ((0.03, 2, 32), (0.003, 7, 64), (1e6, 5, 32), (0.03, 5, 64))
    ]
    hp = _hp(clf_task, space, configs)
    stop = jaxhp.stopping.Patience(1, min_delta=0.5) if stopper else None
    runs = []
    for freeze in (False, True):
        options = EngineOptions.for_platform("cpu", freeze_in_step=freeze)
        finals = []
        outs, _, best = run_population(
            clf_task,
            hp,
            np.arange(4),
            options=options,
            seed=4,
            segment_epochs=3,
            bucketing="none",
            stopper=stop,
            inspect=lambda idx, run, into=finals: into.append(
                jax.device_get(run.tstate)
            ),
        )
        runs.append((outs, best, finals))
    (a_outs, a_best, a_fin), (b_outs, b_best, b_fin) = runs
    assert a_outs[2].status == "diverged" and a_outs[1].status != "diverged"
    if stopper:
        assert "stopped" in {o.status for o in a_outs}
    _assert_same_trials(a_outs, b_outs, a_best, b_best)
    assert len(a_fin) == len(b_fin) == 1
    jax.tree.map(np.testing.assert_array_equal, a_fin[0], b_fin[0])


def test_frozen_trials_stay_bit_identical(clf_task):
    """A trial that finished its epochs keeps its state bit for bit while others train."""
    space = _fixed_space(width=16, n_layers=2, batch_size=32, learning_rate=0.01)
    space = Space(**space, epochs=Choice([2, 6]))
    finals = {}

    def grab(tag):
        def inspect(idx, run):
            finals[tag] = jax.device_get(jax.tree.map(lambda a: a[0], run.tstate))

        return inspect

    ids = np.array([0, 1])
    # Trial 0 trains 2 epochs; its neighbour trains 2 or 6: trial 0 must end the same.
    for tag, epochs in (("short", [2, 2]), ("long", [2, 6])):
        hp = _hp(clf_task, space, [{"epochs": e} for e in epochs])
        clf_task.check_space(space)
        run_population(clf_task, hp, ids, seed=0, segment_epochs=3, inspect=grab(tag))
    jax.tree.map(np.testing.assert_array_equal, finals["short"], finals["long"])


def test_a_round_in_one_segment_equals_it_split_in_segments(clf_task):
    """Where the host cuts a round into segments (compiled calls) changes no trial."""
    space = _fixed_space(width=16, n_layers=2, batch_size=32, optimizer="sgd", epochs=4)
    space = Space(**space, learning_rate=Choice([0.003, 0.03, 1e6]))
    hp = _hp(clf_task, space, [{"learning_rate": v} for v in (0.003, 0.03, 1e6)])
    ids = np.array([0, 1, 2])
    whole, _, best_w = run_population(clf_task, hp, ids, seed=5, segment_epochs=4)
    split, _, best_s = run_population(clf_task, hp, ids, seed=5, segment_epochs=3)
    _assert_same_trials(whole, split, best_w, best_s, rtol=1e-5, atol=1e-6)
    assert whole[2].status == "diverged"


def test_the_best_state_is_the_best_epochs_weights(clf_task):
    """The engine keeps what ``keep`` names of the best epoch: for the MLP its weights,
    equal to those of the same trial trained for just that many epochs, and no optimizer
    state."""
    space = _fixed_space(width=16, n_layers=2, batch_size=32, learning_rate=0.3)
    space = Space(**space, epochs=Choice(list(range(1, 9))))
    ids = np.array([4, 5])
    (a, b), _, best = run_population(
        clf_task, _hp(clf_task, space, [{"epochs": 8}] * 2), ids, seed=1
    )
    assert best.state.opt is None
    top = a if best.trial_id == a.trial_id else b
    assert 0 <= top.best_epoch < 7  # a best epoch before the last: the test can fail
    short = {}

    def grab(idx, run):
        short["params"] = jax.device_get(
            jax.tree.map(lambda v: v[0], run.tstate.params)
        )

    run_population(
        clf_task,
        _hp(clf_task, space, [{"epochs": top.best_epoch + 1}]),
        np.array([top.trial_id]),
        seed=1,
        inspect=grab,
    )
    # Equal up to float rounding (a population of two against one trial alone); another
    # epoch's weights differ by orders of magnitude more at this learning rate.
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
        best.state.params,
        short["params"],
    )


def test_diverging_trial_is_marked_and_neighbours_finish(clf_task):
    space = Space(
        learning_rate=Choice([0.1, 1e6]),
        optimizer=Fixed("sgd"),
        momentum=Fixed(0.9),
        width=Fixed(16),
        n_layers=Fixed(2),
        epochs=Fixed(3),
        batch_size=Fixed(32),
    )
    res = jaxhp.tune(clf_task, space, "grid", n_trials=None, population=2)
    by_lr = {t.params["learning_rate"]: t for t in res.trials}
    bad, good = by_lr[1e6], by_lr[0.1]
    assert bad.status == "diverged" and math.isnan(bad.value)
    assert good.status == "complete" and good.epochs_run == 3 and good.value > 0.5
    assert res.best_trial.trial_id == good.trial_id
    assert res.model.trial_id == good.trial_id


def test_early_stopping_stops_a_stalled_trial(clf_task):
    # learning_rate 0 never improves after the first epoch: Patience(2) stops it after 3.
    space = Space(
        learning_rate=Choice([0.0, 0.01]),
        width=Fixed(16),
        n_layers=Fixed(1),
        epochs=Fixed(12),
        batch_size=Fixed(64),
    )
    res = jaxhp.tune(
        clf_task,
        space,
        "grid",
        n_trials=None,
        early_stopping=jaxhp.stopping.Patience(2),
    )
    stalled = next(t for t in res.trials if t.params["learning_rate"] == 0.0)
    assert stalled.status == "stopped"
    assert stalled.epochs_run == 3 and stalled.best_epoch == 0
    assert len(stalled.curves["train_loss"]) == 3


def test_kfold_runs_every_fold(small_digits):
    X, y = small_digits
    task = jaxhp.tasks.MLPClassifier(X, y, folds=3)
    space = Space(
        width=Fixed(16),
        n_layers=Fixed(1),
        epochs=Fixed(3),
        batch_size=Fixed(32),
        learning_rate=Float(3e-3, 3e-2, log=True),
    )
    res = jaxhp.tune(task, space, "sobol", n_trials=2)
    for t in res.trials:
        assert len(t.fold_values) == 3
        assert t.value == pytest.approx(np.mean(t.fold_values), abs=1e-6)
        assert t.curves["value_folds"].shape == (t.epochs_run, 3)
        assert all(0.3 < v <= 1.0 for v in t.fold_values)
    pred = res.predict(X)  # an ensemble of the 3 fold models
    assert pred.shape == y.shape and (pred == y).mean() > 0.8


def test_batch_size_and_epochs_are_honoured(clf_task):
    # 300 training rows: batch 32 -> 10 steps/epoch, batch 128 -> 3 steps/epoch.
    space = Space(
        batch_size=Choice([32, 128]),
        epochs=Choice([2, 5]),
        width=Fixed(8),
        n_layers=Fixed(1),
    )
    res = jaxhp.tune(
        clf_task, space, "grid", n_trials=None, population=4, bucketing="none"
    )
    for t in res.trials:
        assert t.epochs_run == t.params["epochs"]
        assert len(t.curves["train_loss"]) == t.params["epochs"]
    counts = []

    def count(idx, run):
        counts.append((idx, np.asarray(run.tstate.opt.count[:, 0])))

    space2 = Space(
        batch_size=Choice([32, 128]),
        width=Fixed(8),
        n_layers=Fixed(1),
        epochs=Choice([2, 5]),
    )
    clf_task.check_space(space2)
    hp = _hp(
        clf_task,
        space2,
        [{"batch_size": b, "epochs": e} for b in (32, 128) for e in (2, 5)],
    )
    run_population(clf_task, hp, np.arange(4), seed=0, bucketing="none", inspect=count)
    n_train = int(clf_task.data.n_train[0])
    ((idx, steps),) = counts
    for i, s in zip(idx, steps, strict=False):
        b, e = int(hp["batch_size"][i]), int(hp["epochs"][i])
        assert s == math.ceil(n_train / b) * e


def test_second_round_compiles_nothing(clf_task):
    space = Space(
        learning_rate=Float(1e-3, 1e-1, log=True),
        width=Fixed(12),
        n_layers=Fixed(2),
        epochs=Fixed(2),
        batch_size=Fixed(48),
    )
    before = sum(TRACE_COUNTS.values())
    res = jaxhp.tune(clf_task, space, "random", n_trials=12, population=4)
    assert len({t.round for t in res.trials}) == 3
    assert sum(TRACE_COUNTS.values()) - before == 1
    assert res.stats["programs_compiled"] == 1 and res.stats["buckets"] == 3


def test_structural_hyperparameters_share_a_program(clf_task):
    space = tiny_space(width=jaxhp.Int(4, 16), n_layers=jaxhp.Int(1, 3))
    res = jaxhp.tune(
        clf_task, space, "random", n_trials=16, population=16, bucketing="none"
    )
    assert res.stats["buckets"] == 1
    assert (
        len(
            {
                (t.params["width"], t.params["n_layers"], t.params["batch_size"])
                for t in res.trials
            }
        )
        > 5
    )
    assert all(t.ok for t in res.trials)


def test_buckets_do_not_change_results(clf_task):
    space = tiny_space()
    a = jaxhp.tune(
        clf_task, space, "random", n_trials=8, population=8, bucketing="none"
    )
    b = jaxhp.tune(
        clf_task, space, "random", n_trials=8, population=8, bucketing="pow2"
    )
    assert b.stats["buckets"] > 1
    for x, y in zip(a.trials, b.trials, strict=True):
        np.testing.assert_allclose(
            x.curves["train_loss"], y.curves["train_loss"], rtol=2e-4, atol=1e-6
        )


def test_buckets_are_grouped_without_a_loop_as_with_one(clf_task):
    # Integer shape keys (the MLP's widths) are grouped by NumPy; any other hashables
    # one trial at a time. Both give the same buckets, trials ascending in each.
    from jaxhp.engine.planning import group_by as _group_by
    from jaxhp.tasks.base import next_pow2, next_pow2_array

    n = np.r_[0:4097, 2**20 - 1, 2**20, 2**20 + 1, 2**40 + 3]
    assert next_pow2_array(n).tolist() == [next_pow2(int(v)) for v in n]
    rng = np.random.default_rng(0)
    keys = rng.choice([16, 64, 128, 256], 500)
    batch = next_pow2_array(rng.choice([24, 32, 64, 128], 500))
    fast = _group_by(keys, batch)
    slow = _group_by([f"w{k}" for k in keys], batch)
    assert sorted(fast) == sorted((int(k[1:]), b) for k, b in slow)
    for (k, b), g in fast.items():
        assert g.tolist() == slow[(f"w{k}", b)].tolist()
        assert (np.diff(g) > 0).all() and (keys[g] == k).all() and (batch[g] == b).all()
    assert sum(len(g) for g in fast.values()) == 500
    assert _group_by(keys[:0], batch[:0]) == {} == _group_by([], batch[:0])
    space = tiny_space(width=jaxhp.Int(4, 64), batch_size=Choice([16, 32, 48]))
    hp = clf_task.hparams(space, space.decode(rng.random((300, space.dim))))
    groups = jaxhp.engine.plan_buckets(clf_task, hp, bucketing="pow2", n_rows=100)
    widths = next_pow2_array(np.maximum(hp["width"], clf_task.bucket_width_min))
    for g in groups:  # one width bucket and one batch bucket per group
        assert len(set(widths[g].tolist())) == 1
        assert len(set(next_pow2_array(hp["batch_size"][g]).tolist())) == 1
    assert np.sort(np.concatenate(groups)).tolist() == list(range(300))


def test_outcomes_columns_concatenate_sort_and_give_records():
    # Two chunks that ran 3 and 2 epochs: the concatenation pads the shorter curves
    # with NaN, and each record holds exactly its trial's rows.
    from jaxhp.engine import Outcomes, TrialOutcome
    from jaxhp.engine.outcomes import outcomes_of

    def chunk(ids, n_ep, trained, diverged, stopped):
        p = len(ids)
        loss = np.arange(n_ep * p, dtype=np.float32).reshape(n_ep, p)
        loss[np.arange(n_ep)[:, None] >= np.asarray(trained)[None, :]] = np.nan
        rows = {
            "train_loss": loss,
            "value": loss / 10,
            "value_folds": np.stack([loss, -loss], -1),
        }
        best = np.asarray(trained) - 1
        flags = (
            np.asarray(diverged),
            np.asarray(stopped),
            np.asarray(trained),
            np.linspace(0.1, 0.9, p).astype(np.float32),
            best,
        )
        return outcomes_of(-1.0, flags, [rows], np.asarray(ids), 2.0, f"g{p}")

    a, best_a = chunk(
        [4, 0, 2], 3, [3, 1, 2], [False, False, True], [False, True, False]
    )
    b, _ = chunk([3, 1], 2, [2, 2], [False, False], [False, False])
    assert best_a == (np.float32(0.5), 1)  # the diverged trial (0.9) is never the best
    both = Outcomes.concat([a, b])
    both = both.take(np.argsort(both.trial_id, kind="stable"))
    records = list(both)
    assert all(isinstance(r, TrialOutcome) for r in records)
    assert [r.trial_id for r in records] == [0, 1, 2, 3, 4] == both.trial_id.tolist()
    assert [r.status for r in records] == [
        "stopped",
        "complete",
        "diverged",
        "complete",
        "complete",
    ]
    assert [len(r.curves["train_loss"]) for r in records] == [1, 2, 2, 2, 3]
    assert both.curves["train_loss"].shape == (5, 3)
    assert np.isnan(both.curves["train_loss"][1, 2])  # padding of the 2-epoch chunk
    np.testing.assert_array_equal(records[4].curves["train_loss"], [0, 3, 6])
    assert math.isnan(records[2].value) and records[0].value == -0.5
    np.testing.assert_array_equal(records[0].fold_values, [1, -1])
    assert both[-1].trial_id == 4 and [r.trial_id for r in both[1:3]] == [1, 2]
    assert records[3].bucket == "g2" and records[3].wall_time == 2.0


# What the padding tests train with: both optimizers, weight decay and dropout, each
# of which must leave a padded unit at exactly zero.
_PADDED_RUN = dict(
    epochs=Fixed(3),
    batch_size=Fixed(32),
    optimizer=Choice(["adam", "sgd"]),
    weight_decay=Fixed(1e-3),
    dropout=Fixed(0.1),
)


def _trained_in_one_bucket(task, hp):
    """Train ``hp``'s trials padded into one bucket: their outcomes, and the bucket's
    rows (trial indices) with its final training state, ``[row, fold, ...]``."""
    finals = []
    outs, _, _ = run_population(
        task,
        hp,
        np.arange(len(hp["width"])),
        seed=0,
        bucketing="none",
        inspect=lambda idx, run: finals.append((idx, run.tstate)),
    )
    ((idx, state),) = finals
    return outs, idx, state


def test_padded_units_stay_exactly_zero(clf_task):
    """Units beyond a trial's width start at zero and never move: no mask needed."""
    space = Space(
        width=Choice([5, 16]),
        n_layers=Fixed(2),
        **_PADDED_RUN,
    )
    clf_task.check_space(space)
    configs = [{"width": w, "optimizer": o} for w in (5, 16) for o in ("adam", "sgd")]
    _, idx, state = _trained_in_one_bucket(clf_task, _hp(clf_task, space, configs))
    params = state.params
    for row, i in enumerate(idx):
        w = configs[i]["width"]
        k1 = np.asarray(params["hidden_1"]["kernel"][row, 0])
        assert np.all(k1[w:, :] == 0) and np.all(k1[:, w:] == 0)
        assert np.all(np.asarray(params["hidden_0"]["bias"][row, 0])[w:] == 0)
        assert np.all(np.asarray(params["out"]["kernel"][row, 0])[w:] == 0)
        assert np.any(k1[:w, :w] != 0)


def test_layer_widths_build_the_network_they_name(clf_task):
    """``width_<i>`` gives layer i its own width: every kernel is nonzero exactly on
    its trial's real units (the output's rows: its last layer's), padded in a bucket as
    wide as its widest used layer, and the trial trains as it does alone."""
    space = Space(
        n_layers=Choice([1, 2, 3]),
        width_0=Choice([8, 24]),
        width_1=Choice([5, 16]),
        width_2=Choice([3, 40]),
        **_PADDED_RUN,
    )
    clf_task.check_space(space)
    configs = [
        {"n_layers": 3, "width_0": 24, "width_1": 5, "width_2": 3, "optimizer": "adam"},
        {"n_layers": 2, "width_0": 8, "width_1": 16, "width_2": 40, "optimizer": "sgd"},
        {
            "n_layers": 1,
            "width_0": 8,
            "width_1": 16,
            "width_2": 40,
            "optimizer": "adam",
        },
        {"n_layers": 3, "width_0": 8, "width_1": 16, "width_2": 40, "optimizer": "sgd"},
    ]
    hp = _hp(clf_task, space, configs)
    # Trials 1 and 2 never use their 40-wide layer: a bucket of 32 units holds them.
    np.testing.assert_array_equal(clf_task.shape_keys(hp), [32, 16, 8, 64])
    outs, idx, state = _trained_in_one_bucket(clf_task, hp)
    params = state.params
    for row, i in enumerate(idx):
        c = configs[i]
        used = [c[f"width_{j}"] for j in range(c["n_layers"])]
        fans = [64] + used[:-1]
        for j, (fan, units) in enumerate(zip(fans, used, strict=True)):
            k = np.asarray(params[f"hidden_{j}"]["kernel"][row, 0])
            assert np.all(k[fan:, :] == 0) and np.all(k[:, units:] == 0), (i, j)
            assert np.all(k[:fan, :units] != 0), (i, j)
            assert np.all(
                np.asarray(params[f"hidden_{j}"]["bias"][row, 0])[units:] == 0
            )
        out = np.asarray(params["out"]["kernel"][row, 0])
        assert np.all(out[used[-1] :] == 0) and np.all(out[: used[-1]] != 0), i
    for i in (0, 3):
        (alone,), _, _ = run_population(
            clf_task, _hp(clf_task, space, [configs[i]]), np.array([i]), seed=0
        )
        assert (alone.status, alone.epochs_run) == (outs[i].status, outs[i].epochs_run)
        np.testing.assert_allclose(
            alone.curves["train_loss"], outs[i].curves["train_loss"], rtol=2e-4
        )


def test_equal_layer_widths_train_as_one_width(clf_task):
    """``width_0 = width_1 = w`` is ``width = w``, bit for bit."""
    fixed = dict(epochs=Fixed(2), batch_size=Fixed(32), n_layers=Fixed(2))
    one = Space(width=Choice([8, 16]), **fixed)
    per_layer = Space(width_0=Choice([8, 16]), width_1=Choice([8, 16]), **fixed)
    runs = []
    for space, configs in [
        (one, [{"width": 8}, {"width": 16}]),
        (per_layer, [{"width_0": w, "width_1": w} for w in (8, 16)]),
    ]:
        clf_task.check_space(space)
        outs, _, best = run_population(
            clf_task, _hp(clf_task, space, configs), np.arange(2), seed=1
        )
        runs.append((outs, best))
    (a_outs, a_best), (b_outs, b_best) = runs
    _assert_same_trials(a_outs, b_outs, a_best, b_best)


def test_layer_width_errors_name_the_layer(clf_task, small_digits):
    from jaxhp.space import SpaceError

    two = dict(n_layers=jaxhp.Int(1, 2))
    with pytest.raises(
        SpaceError, match=r"width_2: no trial has a layer 2 .* at most 2"
    ):
        clf_task.check_space(Space(width_2=Choice([8]), **two))
    with pytest.raises(SpaceError, match="width_0: must be an integer"):
        clf_task.check_space(Space(width_0=Float(8, 16), **two))
    with pytest.raises(SpaceError, match=r"width_1: values must lie in \[1, 8192\]"):
        clf_task.check_space(Space(width_1=Choice([0, 8]), **two))
    with pytest.raises(SpaceError, match="'width_01'.* and width_0, width_1, ..."):
        clf_task.check_space(Space(width_01=Choice([8]), **two))
    X, y = small_digits
    task = jaxhp.tasks.MLPClassifier(X, y, width_1=32)  # a default for layer 1
    with pytest.raises(SpaceError, match="width_1: no trial has a layer 1"):
        task.check_space(Space(n_layers=Fixed(1)))
    with pytest.raises(ValueError, match="pbt: width_0 is searched"):
        jaxhp.pbt(clf_task, Space(width_0=Choice([8, 16])), population=2)


def test_a_learning_rate_schedule_spans_each_trials_own_updates(clf_task):
    """A trial's schedule runs over its own updates (``total_steps``: its epochs and
    batch size), counted only when it trains; constant trials in a scheduled bucket
    train bit for bit as in an unscheduled one; a scheduled trial as it does alone."""
    space = Space(
        lr_schedule=Choice(["constant", "cosine", "linear"]),
        warmup=Choice([0.0, 0.25]),
        batch_size=Choice([32, 64]),
        epochs=Choice([2, 3]),
        optimizer=Choice(["adam", "sgd"]),
        width=Fixed(8),
        learning_rate=Fixed(0.02),
    )
    clf_task.check_space(space)
    configs = [
        {"lr_schedule": "cosine", "warmup": 0.25, "batch_size": 32, "epochs": 3},
        {"lr_schedule": "constant", "warmup": 0.0, "batch_size": 64, "epochs": 2},
        {"lr_schedule": "linear", "warmup": 0.0, "batch_size": 64, "epochs": 3},
        {"lr_schedule": "constant", "warmup": 0.0, "batch_size": 32, "epochs": 3},
    ]
    for c, o in zip(configs, ["sgd", "adam"] * 2, strict=True):
        c["optimizer"] = o
    hp = _hp(clf_task, space, configs)
    n = int(clf_task.data.n_train.max())
    np.testing.assert_array_equal(
        hp["total_steps"],
        [3 * -(-n // 32), 2 * -(-n // 64), 3 * -(-n // 64), 3 * -(-n // 32)],
    )
    outs, idx, state = _trained_in_one_bucket(clf_task, hp)
    count = np.asarray(state.opt.count)[:, 0]
    np.testing.assert_array_equal(count, hp["total_steps"][idx])
    plain = Space(**{**space, "lr_schedule": Fixed("constant"), "warmup": Fixed(0.0)})
    const = [configs[1], configs[3]]
    alone, _, _ = run_population(
        clf_task, _hp(clf_task, plain, const), np.array([1, 3]), seed=0
    )
    for a, b in zip([outs[1], outs[3]], alone, strict=True):
        assert (a.status, a.epochs_run) == (b.status, b.epochs_run)
        for k in a.curves:
            np.testing.assert_array_equal(a.curves[k], b.curves[k])
    (cos_alone,), _, _ = run_population(
        clf_task, _hp(clf_task, space, configs[:1]), np.array([0]), seed=0
    )
    np.testing.assert_allclose(
        cos_alone.curves["train_loss"], outs[0].curves["train_loss"], rtol=2e-4
    )
    flat = {**configs[0], "lr_schedule": "constant", "warmup": 0.0}
    (flat_alone,), _, _ = run_population(
        clf_task, _hp(clf_task, space, [flat]), np.array([0]), seed=0
    )  # the same trial without its schedule trains otherwise
    assert not np.allclose(
        flat_alone.curves["train_loss"], cos_alone.curves["train_loss"]
    )


def test_eval_every_validates_on_schedule_and_trains_the_same(clf_task):
    """``eval_every`` changes when validation runs, never the training itself."""
    space = Space(
        epochs=Choice([5, 7]), width=Fixed(16), n_layers=Fixed(1), batch_size=Fixed(64)
    )
    clf_task.check_space(space)
    hp = _hp(clf_task, space, [{"epochs": 5}, {"epochs": 7}])
    every, _, _ = run_population(clf_task, hp, np.arange(2), seed=4, bucketing="none")
    sparse, _, _ = run_population(
        clf_task, hp, np.arange(2), seed=4, bucketing="none", eval_every=3
    )
    for a, b in zip(every, sparse, strict=True):
        n = len(a.curves["train_loss"])
        np.testing.assert_array_equal(a.curves["train_loss"], b.curves["train_loss"])
        due = [(e + 1) % 3 == 0 or e + 1 == n for e in range(n)]  # 2 and the last
        assert list(np.isfinite(b.curves["value"])) == due
        np.testing.assert_array_equal(b.curves["value"][due], a.curves["value"][due])
        assert due[b.best_epoch]
        assert b.value == np.max(a.curves["value"][due])
        np.testing.assert_array_equal(
            b.fold_values, a.curves["value_folds"][b.best_epoch]
        )


def test_eval_every_refuses_a_stopper(clf_task):
    with pytest.raises(ValueError, match="eval_every=2 cannot be combined"):
        jaxhp.tune(
            clf_task,
            tiny_space(),
            n_trials=2,
            eval_every=2,
            early_stopping=jaxhp.stopping.Patience(2),
        )


def test_the_shuffle_is_a_permutation_of_the_real_rows_and_uniform():
    """The engine's sort-free shuffle: for any (traced) row count ``n`` the first ``n``
    entries are a permutation of ``range(n)`` and the padding rows stay in place; over
    many keys, every ordering of 3 and of 5 rows is about equally likely, and a row's
    position is spread evenly over 1437 rows."""
    import collections
    import itertools

    from jaxhp.engine.shuffle import member_perm as _member_perm

    perm = jax.jit(jax.vmap(_member_perm, (0, 0, None)), static_argnums=2)
    keys = jax.random.split(jax.random.key(0), 4)
    ns = np.array([1, 2, 97, 100])
    for p, n in zip(np.asarray(perm(keys, ns, 100)), ns, strict=True):
        assert sorted(p[:n]) == list(range(n))
        np.testing.assert_array_equal(p[n:], np.arange(n, 100))
    for n, bound in ((3, 20.5), (5, 172.0)):  # chi-squared 99.9% points, df 5 / 119
        keys = jax.random.split(jax.random.key(n), 60_000)
        ps = np.asarray(perm(keys, np.full(len(keys), n), n))
        counts = collections.Counter(map(tuple, ps.tolist()))
        expect = len(keys) / math.factorial(n)
        chi2 = sum(
            (counts[q] - expect) ** 2 / expect for q in itertools.permutations(range(n))
        )
        assert chi2 < bound, (n, chi2)
    keys = jax.random.split(jax.random.key(9), 2000)
    ps = np.asarray(perm(keys, np.full(len(keys), 1437), 1437))
    where0 = np.argmax(ps == 0, axis=1)
    deciles = np.histogram(where0, bins=10, range=(0, 1437))[0]
    assert deciles.min() > 140 and deciles.max() < 260, deciles  # 200 expected


@pytest.mark.parametrize("folds", [None, 2])
def test_shuffled_copies_and_gathered_batches_train_the_same(small_digits, folds):
    """Batches sliced from per-epoch shuffled copies of the data (the default on
    accelerators while they fit ``PRESHUFFLE_BYTES``) equal batches gathered through
    the permutation (the CPU's default), bit for bit, with mixed batch sizes (sizes
    below the bucket's, idle steps) and folds."""

    X, y = small_digits
    task = jaxhp.tasks.MLPClassifier(
        X, y, folds=folds, val_fraction=0.25 if not folds else None
    )
    space = Space(
        batch_size=Choice([24, 64]), epochs=Fixed(2), width=Fixed(8), n_layers=Fixed(1)
    )
    task.check_space(space)
    hp = _hp(task, space, [{"batch_size": 24}, {"batch_size": 64}])
    runs = []
    for budget in (256 * 2**20, 0):
        options = EngineOptions.for_platform("cpu", preshuffle_bytes=budget)
        runs.append(
            run_population(
                task, hp, np.arange(2), seed=5, bucketing="none", options=options
            )[0]
        )
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a.curves["train_loss"], b.curves["train_loss"])
        np.testing.assert_array_equal(a.curves["value_folds"], b.curves["value_folds"])


def test_the_devices_given_choose_the_platform_paths(clf_task, monkeypatch):
    """The CPU-or-accelerator choices (gathered batches, NumPy hyperparameters, no
    donation, the cost model) follow the platform of ``devices=``, not JAX's default
    backend: a CPU run on a GPU machine takes the CPU's paths."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    cache = ProgramCache()
    space = _fixed_space(width=8, n_layers=1, batch_size=32, epochs=1)
    hp = _hp(clf_task, space, [{}])
    run_population(
        clf_task, hp, np.arange(1), seed=0, devices=jax.devices("cpu"), cache=cache
    )
    assert [key[0].platform for key in cache.programs] == ["cpu"]
    # The options are the platform's: a GPU's differ where it pays there.
    assert EngineOptions.for_platform("gpu").freeze_in_step


def test_bfloat16_compute_keeps_float32_weights_and_learns(small_digits):
    """Mixed precision: bf16 layers on float32 master weights train close to float32,
    padded units stay exactly zero, and an unknown dtype is refused up front."""
    X, y = small_digits
    space = Space(
        width=Choice([5, 16]),
        n_layers=Fixed(2),
        epochs=Fixed(10),
        batch_size=Fixed(32),
        learning_rate=Fixed(2e-2),
    )
    configs = [{"width": 5}, {"width": 16}]
    values, finals = {}, []
    for dt in ("float32", "bfloat16"):
        task = jaxhp.tasks.MLPClassifier(
            X, y, val_fraction=0.25, seed=0, compute_dtype=dt
        )
        task.check_space(space)
        out, _, _ = run_population(
            task,
            _hp(task, space, configs),
            np.arange(2),
            seed=0,
            bucketing="none",
            inspect=lambda idx, run: finals.append(run.tstate),
        )
        values[dt] = np.array([o.value for o in out])
    state = finals[-1]
    assert all(
        leaf.dtype == np.float32 for leaf in jax.tree.leaves(state.params)
    ) and all(
        leaf.dtype == np.float32
        for leaf in jax.tree.leaves(state.opt)
        if np.issubdtype(leaf.dtype, np.floating)
    )
    k1 = np.asarray(state.params["hidden_1"]["kernel"][0, 0])  # the width-5 trial
    assert np.all(k1[5:, :] == 0) and np.all(k1[:, 5:] == 0)
    assert np.all(values["bfloat16"] > 0.8)
    np.testing.assert_allclose(values["bfloat16"], values["float32"], atol=0.05)
    with pytest.raises(ValueError, match="compute_dtype"):
        jaxhp.tasks.MLPClassifier(X, y, compute_dtype="float16")
