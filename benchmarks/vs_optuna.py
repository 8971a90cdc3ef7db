"""The same sweep run by Optuna and by jaxhp, end to end: wall time and best accuracy.

What a user comparing the two would run. The space is Optuna's own canonical MLP
example (``n_layers``, then ``n_units_l{i}`` for each layer; here ``width_{i}``, as
jaxhp names it), plus the learning rate, the optimizer (Adam, or SGD with momentum 0.9)
and the batch size; every trial trains ``--epochs`` epochs on the same rows of
scikit-learn's digits (jaxhp's stratified 80/20 split, standardised) and scores its
best epoch's validation accuracy. Arms, at equal trial counts:

  optuna_loop  Optuna's TPESampler; the objective trains with a jitted step called
               from a Python loop over the batches (the usual tutorial objective; a new
               layer shape or batch size compiles anew, as it does for any user)
  optuna_scan  the same, the objective training as one jitted ``lax.scan`` (the fast
               way to write one trial; full batches only)
  jaxhp_random, jaxhp_bayes
               ``jaxhp.tune`` with a population of ``--population``
  optuna_loop_median, jaxhp_bayes_median
               the same with pruning: Optuna's MedianPruner (5 trials before it
               prunes, from epoch 3 on) on the accuracy reported every epoch, and
               jaxhp's ``Median(warmup=2)`` stopper (a trial whose best so far is
               below the median of its population's latest values stops)
  jaxhp_bayes_flat
               ``jaxhp_bayes`` without the task's conditions: every ``width_{i}``
               is modelled by the GP, whether the trial has layer ``i`` or not
               (jaxhp before 2026-12-07)

``--jaxhp-trials`` gives the jaxhp arms another budget (Optuna's time buys jaxhp
several times the trials: which finds more in the same time?).

Each arm runs in a fresh process of its own, so that none reuses another's compiled
programs, and its wall time includes every compile. JSON (``--out``) and a table with
each arm's trials/s against ``optuna_loop``:

    python benchmarks/vs_optuna.py --trials 64 --population 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import throughput as tp  # noqa: E402
from runinfo import run_header  # noqa: E402

import jaxhp  # noqa: E402

ARMS = (
    "optuna_loop",
    "optuna_scan",
    "jaxhp_random",
    "jaxhp_bayes",
    "optuna_loop_median",
    "jaxhp_bayes_median",
    "jaxhp_bayes_flat",
)


def digits_split():
    """jaxhp's split of digits, as arrays both sides train on: ``(task, xt, yt, xv,
    yv)`` (the training and validation rows, standardised with the training rows)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    task = jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.2, seed=0)
    d = task.data
    n_tr, n_va = int(d.n_train[0]), int(np.sum(d.val_mask[0]))
    xt, yt = np.asarray(d.x_train[0][:n_tr]), np.asarray(d.y_train[0][:n_tr])
    xv, yv = np.asarray(d.x_val[0][:n_va]), np.asarray(d.y_val[0][:n_va])
    return task, xt, yt, xv, yv


class _MLP(nn.Module):
    widths: tuple[int, ...]
    n_out: int

    @nn.compact
    def __call__(self, x):
        for w in self.widths:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(self.n_out)(x)


def _suggest(trial):
    n_layers = trial.suggest_int("n_layers", 1, 3)
    widths = tuple(
        trial.suggest_int(f"width_{i}", 16, 128, log=True) for i in range(n_layers)
    )
    lr = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
    name = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    batch = trial.suggest_categorical("batch_size", [32, 64, 128])
    tx = optax.adam(lr) if name == "adam" else optax.sgd(lr, momentum=0.9)
    return _MLP(widths, 10), tx, batch


def _loss(model, params, xb, yb):
    logits = model.apply(params, xb)
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()


def objective_loop(data, epochs, prune=False):
    """An Optuna objective as tutorials write it: a jitted step in a Python loop
    (with ``prune``, reporting each epoch's accuracy to the study's pruner)."""
    xt, yt, xv, yv = data

    def objective(trial):
        model, tx, batch = _suggest(trial)
        params = model.init(jax.random.key(trial.number), xt[:1])
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state, xb, yb):
            grads = jax.grad(lambda p: _loss(model, p, xb, yb))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        @jax.jit
        def accuracy(params):
            return jnp.mean(jnp.argmax(model.apply(params, xv), -1) == yv)

        rng = np.random.default_rng(trial.number)
        best = 0.0
        for epoch in range(epochs):
            order = rng.permutation(len(xt))
            for i in range(0, len(xt), batch):
                rows = order[i : i + batch]
                params, opt_state = step(params, opt_state, xt[rows], yt[rows])
            best = max(best, float(accuracy(params)))
            if prune:
                import optuna

                trial.report(best, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return best

    return objective


def objective_scan(data, epochs):
    """An Optuna objective whose whole training is one jitted ``lax.scan``."""
    xt, yt, xv, yv = (jnp.asarray(a) for a in data)

    def objective(trial):
        model, tx, batch = _suggest(trial)
        steps = len(xt) // batch  # full batches only: one shape

        @jax.jit
        def train(key):
            params = model.init(key, xt[:1])

            def epoch(carry, k):
                params, opt_state = carry
                order = jax.random.permutation(k, len(xt))[: steps * batch]

                def step(carry, rows):
                    params, opt_state = carry
                    g = jax.grad(lambda p: _loss(model, p, xt[rows], yt[rows]))(params)
                    updates, opt_state = tx.update(g, opt_state, params)
                    return (optax.apply_updates(params, updates), opt_state), None

                carry, _ = jax.lax.scan(
                    step, (params, opt_state), order.reshape(steps, batch)
                )
                acc = jnp.mean(jnp.argmax(model.apply(carry[0], xv), -1) == yv)
                return carry, acc

            keys = jax.random.split(key, epochs)
            _, accs = jax.lax.scan(epoch, (params, tx.init(params)), keys)
            return jnp.max(accs)

        return float(train(jax.random.key(trial.number)))

    return objective


def run_optuna(objective, n_trials, seed, prune=False):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
        if prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner,
    )
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    seconds = time.perf_counter() - t0
    values = [t.value for t in study.trials]  # None where pruned
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return seconds, values, study.best_params, pruned


def run_jaxhp(task, strategy, n_trials, population, epochs, seed, stopper=None):
    space = jaxhp.Space(
        n_layers=jaxhp.Int(1, 3),
        width_0=jaxhp.Int(16, 128, log=True),
        width_1=jaxhp.Int(16, 128, log=True),
        width_2=jaxhp.Int(16, 128, log=True),
        learning_rate=jaxhp.Float(1e-4, 3e-2, log=True),
        optimizer=jaxhp.Choice(["adam", "sgd"]),
        batch_size=jaxhp.Choice([32, 64, 128]),
        epochs=jaxhp.Fixed(epochs),
    )
    t0 = time.perf_counter()
    res = jaxhp.tune(
        task,
        space,
        strategy,
        n_trials=n_trials,
        population=population,
        seed=seed,
        early_stopping=stopper,
    )
    seconds = time.perf_counter() - t0
    stats = {**res.stats, "stopped": res.summary()["stopped"]}
    return seconds, [t.value for t in res.trials], res.best_params, stats


def run_arm(arm: str, seed: int, args) -> dict:
    """One arm's sweep, in this process."""
    task, *data = digits_split()
    prune = arm.endswith("_median")
    if arm.startswith("optuna"):
        objective = (
            objective_loop(data, args.epochs, prune)
            if arm.startswith("optuna_loop")
            else objective_scan(data, args.epochs)
        )
        seconds, values, best, pruned = run_optuna(objective, args.trials, seed, prune)
        extra = {"pruned": pruned}
    else:
        strategy = arm.split("_")[1]
        if arm.endswith("_flat"):  # no inactive parameters: width_<i> always modelled
            task.conditions = lambda space: {}
        n_trials = args.jaxhp_trials or args.trials
        stopper = jaxhp.stopping.Median(warmup=2) if prune else None
        seconds, values, best, stats = run_jaxhp(
            task, strategy, n_trials, args.population, args.epochs, seed, stopper
        )
        extra = {
            "compile_seconds": stats["compile_time"],
            "programs": stats["programs_compiled"],
            "pruned": stats["stopped"],
        }
    ok = [v for v in values if v is not None and np.isfinite(v)]
    return {
        "seed": seed,
        "arm": arm,
        "trials": len(values),
        "seconds": seconds,
        "trials_per_second": len(values) / seconds,
        "best_accuracy": max(ok),
        "median_accuracy": float(np.median(ok)),
        "best_params": best,
        **extra,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--population", type=int, default=32)
    ap.add_argument(
        "--jaxhp-trials", type=int, default=None, help="the jaxhp arms' trials"
    )
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument(
        "--seed-start", type=int, default=0, help="first seed (runs can be pooled)"
    )
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:  # one arm in this fresh process: its row as JSON on stdout
        print(json.dumps(run_arm(args.child[0], int(args.child[1]), args)))
        return None
    import optuna

    result = run_header(
        "vs_optuna",
        optuna=optuna.__version__,
        trials=args.trials,
        jaxhp_trials=args.jaxhp_trials or args.trials,
        population=args.population,
        epochs=args.epochs,
        rows=[],
    )
    common = [
        f"--{k.replace('_', '-')}={getattr(args, k)}"
        for k in ("trials", "population", "epochs", "jaxhp_trials")
        if getattr(args, k) is not None
    ]
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        for arm in args.arms:
            proc = subprocess.run(
                [sys.executable, __file__, *common, "--child", arm, str(seed)],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            result["rows"].append(row)
            tp.save_json(args.out, {**result, "partial": True})
            print(row, file=sys.stderr, flush=True)
    tp.save_json(args.out, result)
    base = {
        r["seed"]: r["trials_per_second"]
        for r in result["rows"]
        if r["arm"] == "optuna_loop"
    }
    print(
        f"\n{'seed':>4} {'arm':>13} {'trials':>6} {'seconds':>8} {'trials/s':>9} "
        f"{'vs loop':>8} {'best acc':>9} {'median acc':>10}"
    )
    for r in result["rows"]:
        ratio = (
            f"{r['trials_per_second'] / base[r['seed']]:.2f}x"
            if r["seed"] in base
            else "-"
        )
        print(
            f"{r['seed']:>4} {r['arm']:>13} {r['trials']:>6} {r['seconds']:8.1f} "
            f"{r['trials_per_second']:9.2f} {ratio:>8} {r['best_accuracy']:9.4f} "
            f"{r['median_accuracy']:10.4f}"
        )
    print(
        f"trials of {args.epochs} epochs on digits, jaxhp's population "
        f"{args.population}; {jax.devices()[0].device_kind}, optuna {optuna.__version__}"
    )
    return result


if __name__ == "__main__":
    main()
