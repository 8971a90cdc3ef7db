"""A wide mixed space, end to end: jaxhp (plain rounds and recycled, with Patience,
Median and ASHA) against Optuna's TPE with a pruner and a per-trial jitted objective.

The space of issue 31, as a new user would write it: the built-in MLP with widths
32-512 (log), 1-3 layers, batch sizes 32/64/128, 10-60 epochs, learning rate, weight
decay and dropout, on a synthetic 10-class data set (``--rows`` rows, 40 features;
80/20 split). Every arm runs in a fresh process of its own (no reused compiles; wall
times include every compile). Arms:

  optuna         TPESampler + MedianPruner (5 startup trials, from epoch 3); the
                 objective is a Flax MLP with AdamW, a jitted step called from a
                 Python loop over the batches, the accuracy reported every epoch
  jaxhp_<stop>   jaxhp.tune, bayes, population ``--population``, plain rounds
  jaxhp_<stop>_recycle
                 the same with ``recycle=True``
  jaxhp_<stop>_time
                 plain rounds with as many trials as fit in the optuna arm's wall
                 time of the same seed (``timeout``): equal time, not equal trials

``<stop>`` is ``patience`` (``Patience(8)``), ``median`` (``Median(warmup=2)``) or
``asha`` (``SuccessiveHalving(min_resource=4, eta=3)``). Each jaxhp arm records
``stats["work"]``: executed against useful training FLOPs. JSON (``--out``) and a
table::

    python benchmarks/mixed_space.py --seeds 3
    python benchmarks/mixed_space.py --rows 1000 --trials 16 --population 8 \\
        --max-epochs 8 --arms optuna jaxhp_patience jaxhp_patience_recycle   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

STOPS = ("patience", "median", "asha")
ARMS = ("optuna",) + tuple(
    f"jaxhp_{s}{tail}" for s in STOPS for tail in ("", "_recycle", "_time")
)


def dataset(rows: int, seed: int = 0):
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=rows,
        n_features=40,
        n_informative=24,
        n_redundant=8,
        n_classes=10,
        n_clusters_per_class=1,
        class_sep=1.5,
        random_state=seed,
    )
    return X.astype(np.float32), y


def space(max_epochs: int):
    import jaxhp

    return jaxhp.Space(
        n_layers=jaxhp.Int(1, 3),
        width=jaxhp.Int(32, 512, log=True),
        batch_size=jaxhp.Choice([32, 64, 128]),
        epochs=jaxhp.Int(min(10, max_epochs // 2), max_epochs),
        learning_rate=jaxhp.Float(1e-4, 1e-2, log=True),
        weight_decay=jaxhp.Float(1e-6, 1e-2, log=True),
        dropout=jaxhp.Float(0.0, 0.5),
    )


def stopper(name: str):
    from jaxhp import stopping

    return {
        "patience": stopping.Patience(8),
        "median": stopping.Median(warmup=2),
        "asha": stopping.SuccessiveHalving(min_resource=4, eta=3),
    }[name]


def run_jaxhp(arm: str, seed: int, args, timeout: float | None) -> dict:
    import jaxhp

    X, y = dataset(args.rows)
    name = arm.split("_")[1]
    t0 = time.perf_counter()
    task = jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.2, seed=0)
    res = jaxhp.tune(
        task,
        space(args.max_epochs),
        "bayes",
        n_trials=args.trials if timeout is None else 100_000,
        population=args.population,
        seed=seed,
        early_stopping=stopper(name),
        recycle=arm.endswith("_recycle"),
        timeout=timeout,
    )
    wall = time.perf_counter() - t0
    st = res.stats
    return {
        "wall_s": wall,
        "best": float(res.best_value),
        "trials": len(res),
        "epochs": int(sum(t.epochs_run for t in res.trials)),
        "compile_s": st["compile_time"],
        "programs": st["programs_compiled"],
        "work": st["work"],
        "plan": {k: v for k, v in st["plan"].items() if k != "cost_model"},
    }


def run_optuna(seed: int, args) -> dict:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X, y = dataset(args.rows)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    n_val = len(X) // 5
    va, tr = order[:n_val], order[n_val:]
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-8
    xt, yt = (X[tr] - mu) / sd, y[tr]
    xv, yv = jnp.asarray((X[va] - mu) / sd), jnp.asarray(y[va])
    epochs_run = [0]

    class MLP(nn.Module):
        n_layers: int
        width: int
        dropout: float

        @nn.compact
        def __call__(self, x, train: bool):
            for _ in range(self.n_layers):
                x = nn.relu(nn.Dense(self.width)(x))
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            return nn.Dense(10)(x)

    def objective(trial):
        n_layers = trial.suggest_int("n_layers", 1, 3)
        width = trial.suggest_int("width", 32, 512, log=True)
        batch = trial.suggest_categorical("batch_size", [32, 64, 128])
        low = min(10, args.max_epochs // 2)
        epochs = trial.suggest_int("epochs", low, args.max_epochs)
        lr = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        wd = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        model = MLP(n_layers, width, dropout)
        key = jax.random.key(trial.number)
        params = model.init(key, jnp.zeros((1, 40)), False)
        opt = optax.adamw(lr, weight_decay=wd)
        opt_state = opt.init(params)

        @jax.jit
        def step(params, opt_state, xb, yb, k):
            def loss_fn(p):
                out = model.apply(p, xb, True, rngs={"dropout": k})
                return optax.softmax_cross_entropy_with_integer_labels(out, yb).mean()

            g = jax.grad(loss_fn)(params)
            upd, opt_state = opt.update(g, opt_state, params)
            return optax.apply_updates(params, upd), opt_state

        @jax.jit
        def accuracy(params):
            return (model.apply(params, xv, False).argmax(-1) == yv).mean()

        best = 0.0
        perm_rng = np.random.default_rng(trial.number)
        for epoch in range(epochs):
            perm = perm_rng.permutation(len(xt))
            for i in range(0, len(xt), batch):
                idx = perm[i : i + batch]
                key, k = jax.random.split(key)
                params, opt_state = step(params, opt_state, xt[idx], yt[idx], k)
            acc = float(accuracy(params))
            epochs_run[0] += 1
            best = max(best, acc)
            trial.report(acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best

    t0 = time.perf_counter()
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3),
    )
    study.optimize(objective, n_trials=args.trials)
    wall = time.perf_counter() - t0
    # A pruned trial's best so far counts too (jaxhp's stopped trials do).
    vals = [
        max(t.intermediate_values.values())
        for t in study.trials
        if t.intermediate_values
    ]
    return {
        "wall_s": wall,
        "best": float(max(vals)),
        "trials": len(study.trials),
        "epochs": epochs_run[0],
    }


def child(arm: str, seed: int, args, timeout: float | None) -> dict:
    cmd = [sys.executable, __file__, "--child", arm, str(seed)]
    cmd += ["--rows", str(args.rows), "--trials", str(args.trials)]
    cmd += ["--population", str(args.population), "--max-epochs", str(args.max_epochs)]
    if timeout is not None:
        cmd += ["--timeout", str(timeout)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--population", type=int, default=32)
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    ap.add_argument("--timeout", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        arm, seed = args.child[0], int(args.child[1])
        r = (
            run_optuna(seed, args)
            if arm == "optuna"
            else run_jaxhp(arm, seed, args, args.timeout)
        )
        print(json.dumps(r))
        return
    rows = []
    for seed in range(args.seeds):
        ref = None
        for arm in args.arms:
            timeout = None
            if arm.endswith("_time"):
                if ref is None:
                    continue  # equal time needs the optuna arm of this seed
                timeout = ref["wall_s"]
            r = child(arm, seed, args, timeout)
            r.update(arm=arm, seed=seed)
            if arm == "optuna":
                ref = r
            rows.append(r)
            w = r.get("work") or {}
            ratio = w.get("ratio")
            vs = r["wall_s"] / ref["wall_s"] if ref else float("nan")
            print(
                f"seed {seed} {arm:26s} {r['wall_s']:7.1f}s ({vs:4.2f}x optuna) "
                f"best {r['best']:.4f} trials {r['trials']:5d} epochs {r['epochs']:5d}"
                + (f" executed/useful {ratio:.2f}" if ratio else "")
                + (f" {r['plan'].get('recycle', '')}" if "plan" in r else ""),
                flush=True,
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
