"""Time and trial-epochs to a target accuracy: full budgets vs pruning vs recycling vs PBT.

On scikit-learn's digits (MLP, 20% stratified validation), the same random space and
trial budget for every arm:

  full        random population, every trial trains its whole epoch budget
  masked      the same population with ASHA as a mask (pruned slots idle until the
              program ends: no recycling)
  asha        ASHA with slot recycling (tune(recycle=True)): freed slots start new trials
  pbt         population-based training (jaxhp.pbt), continuous hyperparameters
  optuna      Optuna's TPESampler with SuccessiveHalvingPruner, trials one after another
              (each trial trains with a jitted JAX epoch), when optuna is installed

The target is the 90th percentile of the full arm's final accuracies, computed in the
same run. For each arm: seconds until a finished trial reaches the target (steady state:
every arm runs twice and the second run is timed, so compile time is excluded and
reported apart), and trial-epochs trained until then (for ``masked`` these are the
epochs its trials trained; its program computes every slot for the longest survivor's
epochs, which is why its seconds do not drop). Two tracks: ``short`` (27 epochs
at most, ASHA from 1 epoch) and ``long`` (81 epochs, ASHA from 3).

    python benchmarks/early_stopping.py                  # both tracks
    python benchmarks/early_stopping.py --tracks short --trials 81
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from runinfo import run_header  # noqa: E402

import jaxhp  # noqa: E402
from jaxhp.stopping import SuccessiveHalving  # noqa: E402


def make_space(epochs: int) -> jaxhp.Space:
    return jaxhp.Space(
        learning_rate=jaxhp.Float(1e-4, 3e-1, log=True),
        weight_decay=jaxhp.Float(1e-6, 1e-2, log=True),
        momentum=jaxhp.Float(0.5, 0.99),
        optimizer=jaxhp.Fixed("sgd"),
        n_layers=jaxhp.Fixed(2),
        width=jaxhp.Fixed(64),
        batch_size=jaxhp.Fixed(64),
        epochs=jaxhp.Fixed(epochs),
    )


class Clock:
    """Seconds and trial-epochs at which a finished trial first reaches ``target``."""

    def __init__(self, target: float):
        self.target = target
        self.t0 = time.perf_counter()
        self.epochs = 0
        self.hit: tuple[float, int] | None = None

    def finished(self, trials) -> None:
        self.epochs += sum(t.epochs_run for t in trials)
        if self.hit is None and any(t.ok and t.value >= self.target for t in trials):
            self.hit = (time.perf_counter() - self.t0, self.epochs)


def run_arm(name, task, space, args, target, track):
    n, epochs = args.trials, space["epochs"].value
    min_r = 1 if track == "short" else 3

    def go(clock):
        cb = clock.finished if clock else None
        if name == "full":
            return jaxhp.tune(
                task,
                space,
                "random",
                n_trials=n,
                population=n,
                seed=args.seed,
                callback=cb,
            )
        if name == "masked":
            return jaxhp.tune(
                task,
                space,
                "random",
                n_trials=n,
                population=n,
                seed=args.seed,
                callback=cb,
                early_stopping=SuccessiveHalving(min_r, 3),
            )
        if name == "asha":
            return jaxhp.tune(
                task,
                space,
                "random",
                n_trials=n,
                population=args.slots,
                seed=args.seed,
                callback=cb,
                recycle=True,
                early_stopping=SuccessiveHalving(min_r, 3),
            )
        if name == "pbt":
            sub = jaxhp.Space({k: v for k, v in space.items() if k != "epochs"})
            gens = max(1, epochs // args.pbt_interval)
            t_start = time.perf_counter()
            res = jaxhp.pbt(
                task,
                sub,
                population=args.pbt_population,
                generations=gens,
                interval=args.pbt_interval,
                seed=args.seed,
            )
            wall = time.perf_counter() - t_start
            if clock is not None:
                # Members report every epoch: the first epoch any member reaches the
                # target, at the population's average pace.
                vals = np.stack([t.curves["value"] for t in res.trials], 1)  # [E, P]
                # The host sees the members' values at generation boundaries: the
                # hit counts at the end of its generation.
                hit = np.flatnonzero(np.nanmax(vals, 1) >= target)
                if hit.size:
                    k = args.pbt_interval
                    e = min(-(-(int(hit[0]) + 1) // k) * k, vals.shape[0])
                    clock.hit = (wall * e / vals.shape[0], e * vals.shape[1])
                clock.epochs = vals.shape[0] * vals.shape[1]
            return res
        if name == "optuna":
            return optuna_arm(task, space, args, clock, min_r)
        raise ValueError(name)

    t0 = time.perf_counter()
    go(None)  # compiles
    first = time.perf_counter() - t0
    clock = Clock(target)
    t0 = time.perf_counter()
    res = go(clock)
    wall = time.perf_counter() - t0
    best = res.best_value if res is not None and res.best_trial else float("nan")
    return {
        "arm": name,
        "seconds_to_target": clock.hit[0] if clock.hit else None,
        "trial_epochs_to_target": clock.hit[1] if clock.hit else None,
        "seconds_total": wall,
        "trial_epochs_total": clock.epochs,
        "best_accuracy": best,
        "compile_seconds": max(first - wall, 0.0),
    }


def optuna_arm(task, space, args, clock, min_r):
    """Optuna TPE + SuccessiveHalvingPruner; each trial trains with a jitted epoch."""
    try:
        import optuna
    except ImportError:
        return None
    import optax

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    d = task.data
    xt, yt = (
        jnp.asarray(d.x_train[0][: d.n_train[0]]),
        jnp.asarray(d.y_train[0][: d.n_train[0]]),
    )
    xv = jnp.asarray(d.x_val[0][d.val_mask[0]])
    yv = jnp.asarray(d.y_val[0][d.val_mask[0]])
    n, bsz, epochs = xt.shape[0], 64, space["epochs"].value
    steps = -(-n // bsz)

    def init(key):
        sizes = [xt.shape[1], 64, 64, task.n_out]
        ks = jax.random.split(key, 3)
        return [
            (jax.random.normal(k, (a, b)) / math.sqrt(a), jnp.zeros(b))
            for k, a, b in zip(ks, sizes[:-1], sizes[1:], strict=True)
        ]

    def fwd(p, x):
        for w, b in p[:-1]:
            x = jax.nn.relu(x @ w + b)
        return x @ p[-1][0] + p[-1][1]

    def loss(p, x, y, m):
        ce = optax.softmax_cross_entropy_with_integer_labels(fwd(p, x), y)
        return jnp.sum(ce * m) / jnp.maximum(m.sum(), 1)

    @jax.jit
    def epoch(p, opt, key, lr, wd, mom):
        tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, mom))
        perm = jax.random.permutation(key, n)

        def step(c, t):
            p, o = c
            idx = t * bsz + jnp.arange(bsz)
            rows = perm[jnp.minimum(idx, n - 1)]
            g = jax.grad(loss)(p, xt[rows], yt[rows], (idx < n).astype(jnp.float32))
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        (p, opt), _ = jax.lax.scan(step, (p, opt), jnp.arange(steps))
        acc = jnp.mean(jnp.argmax(fwd(p, xv), -1) == yv)
        return p, opt, acc

    def objective(trial):
        lr = trial.suggest_float("learning_rate", 1e-4, 3e-1, log=True)
        wd = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        mom = trial.suggest_float("momentum", 0.5, 0.99)
        key = jax.random.key(trial.number)
        p = init(key)
        opt = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, mom)).init(p)
        best = 0.0
        for e in range(epochs):
            p, opt, acc = epoch(p, opt, jax.random.fold_in(key, e), lr, wd, mom)
            acc = float(acc)
            best = max(best, acc if math.isfinite(acc) else 0.0)
            trial.report(acc, e)
            trial.set_user_attr("epochs", e + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_r, reduction_factor=3
        ),
    )

    class T:  # the bits of a jaxhp Trial the clock reads
        def __init__(self, ft):
            vals = [v for v in ft.intermediate_values.values() if math.isfinite(v)]
            self.value = max(vals) if vals else float("nan")
            self.ok = bool(vals)
            self.epochs_run = ft.user_attrs.get("epochs", 0)

    def cb(study, ft):
        if clock is not None:
            clock.finished([T(ft)])

    study.optimize(objective, n_trials=args.trials, callbacks=[cb])

    class R:
        best_trial = True
        best_value = max(T(t).value for t in study.trials)

    return R()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracks", nargs="*", default=["short", "long"])
    ap.add_argument("--trials", type=int, default=81)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--pbt-population", type=int, default=16)
    ap.add_argument("--pbt-interval", type=int, default=3)
    ap.add_argument(
        "--arms", nargs="*", default=["full", "masked", "asha", "pbt", "optuna"]
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    task = jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.2, seed=0)
    tracks = []
    for track in args.tracks:
        space = make_space(27 if track == "short" else 81)
        task.check_space(space)
        full = jaxhp.tune(
            task,
            space,
            "random",
            n_trials=args.trials,
            population=args.trials,
            seed=args.seed,
        )
        finals = np.asarray([t.value for t in full.trials if t.ok])
        target = float(np.percentile(finals, 90))
        rows = []
        for arm in args.arms:
            if arm == "optuna":
                try:
                    import optuna  # noqa: F401
                except ImportError:
                    continue
            rows.append(run_arm(arm, task, space, args, target, track))
            print(track, rows[-1], file=sys.stderr, flush=True)
        base = next(r for r in rows if r["arm"] == "full")["seconds_to_target"]
        for r in rows:
            s = r["seconds_to_target"]
            r["speedup_vs_full"] = base / s if (s and base) else None
        tracks.append(
            {
                "track": track,
                "epochs": space["epochs"].value,
                "target_accuracy": target,
                "rows": rows,
            }
        )
    result = run_header(
        "early_stopping", trials=args.trials, slots=args.slots, tracks=tracks
    )
    print(json.dumps(result, indent=2))
    print(
        f"\n{'track':>6} {'arm':>7} {'s to target':>12} {'epochs to target':>17} "
        f"{'speed-up':>9} {'best acc':>9} {'s total':>8} {'compile s':>10}"
    )
    for t in tracks:
        for r in t["rows"]:
            s = r["seconds_to_target"]
            e = r["trial_epochs_to_target"]
            sp = r["speedup_vs_full"]
            print(
                f"{t['track']:>6} {r['arm']:>7} {s if s is None else round(s, 2)!s:>12} "
                f"{e!s:>17} {sp if sp is None else round(sp, 2)!s:>9} "
                f"{r['best_accuracy']:>9.4f} {r['seconds_total']:>8.2f} "
                f"{r['compile_seconds']:>10.1f}"
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
