import math

import numpy as np
import pytest
from sklearn.datasets import load_diabetes

import jaxhp
from jaxhp import Choice, DataError, Fixed, Float, Space, SpaceError


def test_data_errors_are_clear(small_digits):
    X, y = small_digits
    with pytest.raises(DataError, match="X has 400 rows but y has 399"):
        jaxhp.tasks.MLPClassifier(X, y[:-1])
    Xn = X.astype(float).copy()
    Xn[7, 3] = np.nan
    with pytest.raises(DataError, match="NaN or Inf in 1 row.*first at row 7"):
        jaxhp.tasks.MLPClassifier(Xn, y)
    with pytest.raises(DataError, match="single class"):
        jaxhp.tasks.MLPClassifier(X, np.zeros(len(X)))
    with pytest.raises(DataError, match="val_fraction must be in"):
        jaxhp.tasks.MLPClassifier(X, y, val_fraction=1.5)
    with pytest.raises(DataError, match="exactly one of"):
        jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.2, folds=3)
    with pytest.raises(DataError, match="must have shape"):
        jaxhp.tasks.MLPClassifier(X[:, 0], y)
    with pytest.raises(ValueError, match="metric must be one of"):
        jaxhp.tasks.MLPClassifier(X, y, metric="f1")
    with pytest.raises(TypeError, match="unknown hyperparameter default"):
        jaxhp.tasks.MLPClassifier(X, y, widht=3)
    with pytest.raises(DataError, match=r"no features \(shape \(400, 0\)\)"):
        jaxhp.tasks.MLPClassifier(X[:, :0], y)
    # Labels as a pandas column would bring them: objects, with gaps or mixed types.
    labels = np.array([f"c{v}" for v in y], dtype=object)
    labels[5] = None
    with pytest.raises(DataError, match="1 missing value.*first at row 5"):
        jaxhp.tasks.MLPClassifier(X, labels)
    labels[5] = 3
    with pytest.raises(DataError, match=r"one type.*\['int', 'str'\]"):
        jaxhp.tasks.MLPClassifier(X, labels)
    with pytest.raises(DataError, match="y must be numeric for a regressor"):
        jaxhp.tasks.MLPRegressor(X, labels)
    with pytest.raises(DataError, match="y_val has 1 target.* y has 2"):
        jaxhp.tasks.MLPRegressor(
            X[:300], np.zeros((300, 2)), X_val=X[300:], y_val=np.zeros(100)
        )


def test_task_defaults_are_checked_before_the_data(small_digits):
    """A default given to a task fails as a space's value would, naming the keyword,
    before the data is touched (a default was used as given: a width of 0 trained
    nothing, an unknown optimizer raised ``tuple.index``'s error at the first round)."""
    X, y = small_digits
    cases = [
        ({"width": 0}, r"width=0 \(a default\): values must lie in \[1, 8192\]"),
        ({"width_1": 2.5}, r"width_1=2.5 \(a default\): must be an integer"),
        ({"learning_rate": -1.0}, r"learning_rate=-1.0 \(a default\): values must"),
        ({"optimizer": "adamx"}, r"optimizer='adamx' \(a default\): unknown value"),
        ({"batch_size": "64"}, r"batch_size='64' \(a default\): must be numeric"),
        ({"epochs": float("nan")}, r"epochs=nan \(a default\): Fixed value must be"),
        ({"warmup": 1.0}, r"warmup=1.0 \(a default\): values must lie in \[0.0, 0.9\]"),
        ({"lr_schedule": "step"}, r"lr_schedule='step' \(a default\): unknown value"),
    ]
    for kw, message in cases:
        with pytest.raises(SpaceError, match=message):
            jaxhp.tasks.MLPClassifier(X, y[:-1], **kw)  # the data's error comes later
    model = jaxhp.tasks.mlp.MLPTrainable("classifier", 64, 10, 1, 8, False, (0,), (0,))
    with pytest.raises(SpaceError, match=r"batch_size=0 \(a default\)"):
        jaxhp.tasks.TrainableTask(model, X, y, metric="accuracy", batch_size=0)
    # Integral floats are integers: 64.0 trains as 64.
    task = jaxhp.tasks.MLPClassifier(X, y, width=16.0, epochs=2.0)
    space = Space(dropout=Float(0.0, 0.5))
    hp = task.hparams(space, {"dropout": np.zeros(2)})
    assert hp["width"].dtype == np.int32 and hp["width"].tolist() == [16, 16]


def test_tune_argument_errors(clf_task):
    space = Space(width=Choice([8]))
    with pytest.raises(ValueError, match="population must be a positive integer"):
        jaxhp.tune(clf_task, space, n_trials=2, population=0)
    with pytest.raises(ValueError, match="n_trials must be a positive integer"):
        jaxhp.tune(clf_task, space, n_trials=-1)
    with pytest.raises(TypeError, match="space must be a jaxhp.Space"):
        jaxhp.tune(clf_task, {"width": 8}, n_trials=1)
    with pytest.raises(TypeError, match="early_stopping must be a stopper"):
        jaxhp.tune(clf_task, space, n_trials=1, early_stopping=5)
    with pytest.raises(ValueError, match="Patience: patience must be"):
        jaxhp.stopping.Patience(0)
    with pytest.raises(ValueError, match="devices is empty"):
        jaxhp.tune(clf_task, space, n_trials=1, devices=[])
    # Nothing to search: bayes says so before training (random repeats the one point).
    with pytest.raises(jaxhp.SpaceError, match="bayes strategy needs a parameter"):
        jaxhp.tune(clf_task, Space(width=Fixed(8)), "bayes", n_trials=2)


def test_stratified_split_and_standardisation(small_digits):
    X, y = small_digits
    task = jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.25)
    d = task.data
    n_val = int(d.val_mask.sum())
    assert abs(n_val - 100) <= 10 and d.n_train[0] + n_val == len(y)
    val_counts = np.bincount(d.y_val[0][d.val_mask[0]], minlength=10)
    assert val_counts.min() >= 8  # every class represented
    xt = d.x_train[0][: d.n_train[0]]
    nonconst = X[:, :].std(0) > 0
    np.testing.assert_allclose(xt.mean(0)[nonconst], 0, atol=1e-4)
    # k-fold: every row is validated exactly once
    kf = jaxhp.tasks.MLPClassifier(X, y, folds=4).data
    assert kf.n_folds == 4 and int(kf.val_mask.sum()) == len(y)


def test_explicit_validation_set(small_digits, digits):
    X, y = small_digits
    Xall, yall = digits
    task = jaxhp.tasks.MLPClassifier(X, y, X_val=Xall[1500:], y_val=yall[1500:])
    assert int(task.data.val_mask.sum()) == len(yall) - 1500
    with pytest.raises(DataError, match="X_val rows have shape"):
        jaxhp.tasks.MLPClassifier(X, y, X_val=Xall[:5, :10], y_val=yall[:5])


def test_regressor_learns_diabetes():
    X, y = load_diabetes(return_X_y=True)
    task = jaxhp.tasks.MLPRegressor(X, y, val_fraction=0.2)
    space = Space(
        learning_rate=Float(3e-3, 3e-2, log=True),
        width=Fixed(32),
        n_layers=Fixed(1),
        epochs=Fixed(30),
        batch_size=Fixed(32),
        weight_decay=Fixed(1e-4),
    )
    res = jaxhp.tune(task, space, "sobol", n_trials=4, population=4)
    assert res.metric == "mse" and res.direction == "minimize"
    assert res.best_value < 0.8 * np.var(y)  # far better than predicting the mean
    pred = res.predict(X)
    assert pred.shape == y.shape
    assert np.mean((pred - y) ** 2) < 0.8 * np.var(y)
    assert all("r2" in t.curves for t in res.trials)


def test_results_api(clf_task):
    space = Space(
        learning_rate=Float(1e-3, 1e-1, log=True),
        width=Choice([8, 16]),
        n_layers=Fixed(1),
        epochs=Fixed(3),
        batch_size=Fixed(64),
        optimizer=Choice(["adam", "adamw"]),
    )
    res = jaxhp.tune(clf_task, space, "random", n_trials=6, population=6)
    bp = res.best_params
    assert set(bp) == set(space) and isinstance(bp["learning_rate"], float)
    assert bp["optimizer"] in ("adam", "adamw") and isinstance(bp["width"], int)
    assert res.best_value == max(t.value for t in res.trials)
    df = res.to_pandas()
    assert len(df) == 6 and {"accuracy", "status", "epochs_run", "wall_time"} <= set(
        df.columns
    )
    curves = res.curves(res.best_trial.trial_id)
    assert set(curves) >= {"train_loss", "accuracy", "accuracy_folds", "loss"}
    assert len(curves["accuracy"]) == 3 and np.isfinite(curves["train_loss"]).all()
    assert "accuracy" in res.table(3) and len(res.table(3).splitlines()) == 5
    assert math.isclose(curves["accuracy"][res.best_trial.best_epoch], res.best_value)
    X = np.asarray(clf_task.data.x_val[0][:20])  # standardised rows: any rows will do
    proba = res.predict_proba(X)
    assert proba.shape == (20, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(res.predict(X), proba.argmax(1))  # labels 0..9


def test_demo_code_path_runs(capsys):
    from jaxhp.cli import main

    assert (
        main(["demo", "--n-trials", "4", "--population", "4", "--quiet", "--top", "3"])
        == 0
    )
    out = capsys.readouterr().out
    assert "Best configuration" in out and "best validation accuracy" in out


def test_cli_help_lists_verbs(capsys):
    from jaxhp.cli import main

    assert main([]) == 0
    out = capsys.readouterr().out
    for verb in ("demo", "tune", "resume", "show", "report", "export", "predict"):
        assert f"    {verb} " in out, verb


def test_classifier_loss_matches_optax():
    """The hand-written log-softmax cross-entropy equals optax's, value and gradient."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxhp.tasks.mlp import MLPTrainable

    tr = MLPTrainable("classifier", 4, 10, 1, 8, False, (0,), (0,))
    y = jax.random.randint(jax.random.key(1), (64,), 0, 10)
    mask = jnp.arange(64) < 50

    def ref(out):
        ce = optax.softmax_cross_entropy_with_integer_labels(out, y)
        return jnp.sum(jnp.where(mask, ce, 0.0)) / 50

    for scale in (1.0, 1e3):
        out = jax.random.normal(jax.random.key(0), (64, 10)) * scale
        np.testing.assert_allclose(tr._loss(out, y, mask), ref(out), rtol=1e-6)
        # What a step trains on: per-row terms over the engine's row count
        # (Batch.count), zero on padding, summing to the same loss.
        terms = tr._loss_terms(out, y, mask, jnp.int32(50))
        assert terms.shape == (64,) and not np.any(np.asarray(terms)[50:])
        np.testing.assert_allclose(jnp.sum(terms), ref(out), rtol=1e-6)
        for loss in (
            lambda o: tr._loss(o, y, mask),
            lambda o: jnp.sum(tr._loss_terms(o, y, mask, jnp.int32(50))),
        ):
            np.testing.assert_allclose(
                jax.grad(loss)(out), jax.grad(ref)(out), rtol=1e-6, atol=1e-7
            )
