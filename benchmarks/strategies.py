"""Search strategies against each other (and Optuna) on functions with known optima.

Synthetic track: Branin (2-D), Hartmann6 (6-D) and Ackley-5 (5-D), each arm run for the
largest budget with ``--seeds`` seeds and batch sizes ``--q``; simple regret
``f(best so far) - f*`` is read at every budget (a strategy here does not depend on the
budget). Arms: jaxhp's random, sobol and bayes, and, when installed (``pip install optuna
torch``: a benchmark extra, never a runtime dependency), Optuna's TPESampler and GPSampler
(q = 1 only: Optuna proposes one trial at a time). Reports the median and interquartile
range of log10 regret per budget, seconds per proposal, and (with matplotlib) a
regret-vs-evaluations plot.

With ``--shared-design`` Optuna's samplers start from the same initial points as the
bayes arm, seed by seed (enqueued trials): the arms then differ only in their models and
acquisitions, not in the luck of their random starts, which on Hartmann6 decides whether
a run finds the global basin at all.

Neural-network track (``--nn``): the built-in MLP on scikit-learn's digits, breast cancer
and wine with 5-fold cross-validation; bayes vs random vs sobol at equal trial counts.

    python benchmarks/strategies.py --seeds 10 --budgets 50 100 --q 1 --shared-design
    python benchmarks/strategies.py --seeds 10 --budgets 64 128 192 --q 8 64 --no-optuna
    python benchmarks/strategies.py --nn --nn-trials 64
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from runinfo import run_header  # noqa: E402

import jaxhp  # noqa: E402
from jaxhp.strategies.bayes import default_n_initial  # noqa: E402

# ----------------------------------------------------------------------------- functions


def branin(x):  # x in [0, 1]^2
    x1, x2 = -5 + 15 * x[:, 0], 15 * x[:, 1]
    return (
        (x2 - 5.1 / (4 * np.pi**2) * x1**2 + 5 / np.pi * x1 - 6) ** 2
        + 10 * (1 - 1 / (8 * np.pi)) * np.cos(x1)
        + 10
    )


_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x):  # x in [0, 1]^6
    inner = np.sum(_H_A[None] * (x[:, None, :] - _H_P[None]) ** 2, axis=-1)
    return -np.sum(_H_ALPHA * np.exp(-inner), axis=-1)


def ackley5(x):  # x in [0, 1]^5 mapped to [-32.768, 32.768]^5
    z = (x - 0.5) * 2 * 32.768
    d = z.shape[1]
    return (
        -20 * np.exp(-0.2 * np.sqrt(np.sum(z**2, 1) / d))
        - np.exp(np.sum(np.cos(2 * np.pi * z), 1) / d)
        + 20
        + math.e
    )


FUNCTIONS = {
    "branin": (branin, 2, 0.397887357729738),
    "hartmann6": (hartmann6, 6, -3.32236801141551),
    "ackley5": (ackley5, 5, 0.0),
}


def _space(d):
    return jaxhp.Space({f"x{i}": jaxhp.Float(0.0, 1.0) for i in range(d)})


# ----------------------------------------------------------------------------- arms


def run_jaxhp(strategy, fn, d, budget, q, seed, options=None):
    space = _space(d)
    s = jaxhp.strategies.make_strategy(strategy, space, **(options or {}))
    st = s.init(jax.random.key(seed))
    ys, times = [], []
    while len(ys) < budget:
        n = min(q, budget - len(ys))
        t0 = time.perf_counter()
        u, st = s.ask(st, n)
        times.append(time.perf_counter() - t0)
        x = np.stack([space.decode(u)[f"x{i}"] for i in range(d)], 1)
        y = fn(x)
        st = s.tell(st, u, y)
        ys.extend(y.tolist())
    return np.asarray(ys), float(np.median(times[1:] if len(times) > 1 else times))


def bayes_design(d, seed, options=None):
    """The initial design jaxhp's bayes arm starts from with this seed (its first
    ``n_initial`` points), for ``--shared-design``."""
    space = _space(d)
    s = jaxhp.strategies.make_strategy("bayes", space, **(options or {}))
    st = s.init(jax.random.key(seed))
    n = (options or {}).get("n_initial")
    u, _ = s.ask(st, default_n_initial(d) if n is None else n)
    return u


def run_optuna(kind, fn, d, budget, seed, design=None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = 10 if design is None else len(design)
    sampler = (
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        if kind == "tpe"
        else optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    )
    study = optuna.create_study(sampler=sampler)
    for row in design if design is not None else ():
        # The same starting points as the bayes arm (common random numbers).
        study.enqueue_trial({f"x{i}": float(v) for i, v in enumerate(row)})
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(budget):
            t0 = time.perf_counter()
            trial = study.ask()
            x = np.array([[trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(d)]])
            times.append(time.perf_counter() - t0)
            study.tell(trial, float(fn(x)[0]))
    return np.asarray([t.value for t in study.trials]), float(np.median(times[1:]))


def optuna_available():
    try:
        import optuna  # noqa: F401
        import torch  # noqa: F401  (GPSampler needs it)
    except ImportError:
        return False
    return True


def summarize(regrets):
    lr = np.log10(np.maximum(regrets, 1e-12))
    q25, med, q75 = np.percentile(lr, [25, 50, 75])
    return {
        "median_log10_regret": float(med),
        "iqr": [float(q25), float(q75)],
        "log10_regret_per_seed": lr.tolist(),  # to pool runs over disjoint seeds
    }


def synthetic(args):
    budgets = sorted(args.budgets)
    top = budgets[-1]
    arms = [a for a in ("random", "sobol", "bayes") if a in args.arms]
    with_optuna = optuna_available() and not args.no_optuna
    rows, curves = [], {}
    for fname in args.functions:
        fn, d, fstar = FUNCTIONS[fname]
        for q in args.q:
            arm_list = arms + [
                a
                for a in ("optuna_tpe", "optuna_gp")
                if with_optuna and q == 1 and a in args.arms
            ]
            for arm in arm_list:
                regrets, secs = [], []
                for seed in range(args.seed_start, args.seed_start + args.seeds):
                    if arm.startswith("optuna"):
                        design = (
                            bayes_design(d, seed, args.bayes_options)
                            if args.shared_design
                            else None
                        )
                        ys, t = run_optuna(arm[7:], fn, d, top, seed, design)
                    else:
                        opts = args.bayes_options if arm == "bayes" else None
                        ys, t = run_jaxhp(arm, fn, d, top, q, seed, opts)
                    regrets.append(np.minimum.accumulate(ys) - fstar)
                    secs.append(t)
                regrets = np.asarray(regrets)  # [seeds, budget]
                # The median of log10 regret per evaluation, as in the table (with an
                # even seed count, log10 of the median regret can differ a lot).
                curves[f"{fname}/q{q}/{arm}"] = np.median(
                    np.log10(np.maximum(regrets, 1e-12)), 0
                ).tolist()
                for b in budgets:
                    rows.append(
                        {
                            "function": fname,
                            "q": q,
                            "arm": arm,
                            "budget": b,
                            **summarize(regrets[:, b - 1]),
                            "seconds_per_proposal": float(np.median(secs)),
                        }
                    )
                last = rows[-1]
                print(
                    f"{fname} q={q} {arm}: median log10 regret at {top} = "
                    f"{last['median_log10_regret']:.2f}, {last['seconds_per_proposal']:.3f}"
                    " s/proposal",
                    file=sys.stderr,
                    flush=True,
                )
    return rows, curves


def plot(curves, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = sorted({k.rsplit("/", 1)[0] for k in curves})
    fig, axes = plt.subplots(
        1, len(groups), figsize=(4 * len(groups), 3.4), squeeze=False
    )
    for ax, g in zip(axes[0], groups, strict=True):
        for k, v in curves.items():
            if k.startswith(g + "/"):
                ax.plot(np.arange(1, len(v) + 1), v, label=k.rsplit("/", 1)[1])
        ax.set_title(g)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("median log10 regret")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def nn_track(args):
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    out = []
    space = jaxhp.Space(
        learning_rate=jaxhp.Float(1e-4, 1e-1, log=True),
        weight_decay=jaxhp.Float(1e-6, 1e-2, log=True),
        n_layers=jaxhp.Int(1, 3),
        width=jaxhp.Int(16, 128, log=True),
        batch_size=jaxhp.Choice([32, 64]),
        epochs=jaxhp.Fixed(20),
    )
    for name, loader in (
        ("digits", load_digits),
        ("breast_cancer", load_breast_cancer),
        ("wine", load_wine),
    ):
        X, y = loader(return_X_y=True)
        task = jaxhp.tasks.MLPClassifier(X, y, folds=5, seed=0)
        for strategy in [a for a in ("random", "sobol", "bayes") if a in args.arms]:
            bests = []
            t0 = time.perf_counter()
            for seed in range(args.nn_seeds):
                res = jaxhp.tune(
                    task,
                    space,
                    strategy,
                    n_trials=args.nn_trials,
                    population=args.nn_population,
                    seed=seed,
                )
                bests.append(res.best_value)
            out.append(
                {
                    "dataset": name,
                    "strategy": strategy,
                    "trials": args.nn_trials,
                    "population": args.nn_population,
                    "seeds": args.nn_seeds,
                    "median_best_cv_accuracy": float(np.median(bests)),
                    "best_cv_accuracies": bests,
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(out[-1], file=sys.stderr, flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--functions", nargs="*", default=list(FUNCTIONS))
    ap.add_argument("--budgets", type=int, nargs="*", default=[50, 100, 200])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument(
        "--seed-start",
        type=int,
        default=0,
        help="first seed (runs on disjoint seed ranges can be pooled)",
    )
    ap.add_argument("--q", type=int, nargs="*", default=[1, 8, 64])
    ap.add_argument("--no-optuna", action="store_true")
    ap.add_argument(
        "--bayes-options",
        type=json.loads,
        default={},
        help="options of the bayes strategy, as JSON (an ablation: '{\"fit_steps\": 300}')",
    )
    ap.add_argument(
        "--shared-design",
        action="store_true",
        help="start Optuna's samplers from the bayes arm's initial design, seed by seed "
        "(common random numbers: the comparison is then between the models and "
        "acquisitions alone, not the luck of each arm's random start)",
    )
    ap.add_argument(
        "--arms",
        nargs="*",
        default=["random", "sobol", "bayes", "optuna_tpe", "optuna_gp"],
        help="arms to run (default: all; the Optuna ones need optuna and torch)",
    )
    ap.add_argument(
        "--nn", action="store_true", help="run the neural-network track instead"
    )
    ap.add_argument("--nn-trials", type=int, default=64)
    ap.add_argument("--nn-population", type=int, default=16)
    ap.add_argument("--nn-seeds", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--plot", default=None, help="PNG path for the regret curves")
    args = ap.parse_args(argv)
    meta = {
        "bayes_options": args.bayes_options,
        "shared_design": args.shared_design,
    }
    if args.nn:
        result = run_header("strategies-nn", **meta, rows=nn_track(args))
        print(json.dumps(result, indent=2))
        print(
            f"\n{'dataset':>14} {'strategy':>8} {'median best 5-fold CV accuracy':>32}"
        )
        for r in result["rows"]:
            print(
                f"{r['dataset']:>14} {r['strategy']:>8} {r['median_best_cv_accuracy']:>32.4f}"
            )
    else:
        rows, curves = synthetic(args)
        result = run_header(
            "strategies",
            **meta,
            seeds=args.seeds,
            seed_start=args.seed_start,
            rows=rows,
            median_log10_regret_curves=curves,
        )
        if args.plot:
            result["plot"] = plot(curves, args.plot)
        print(
            json.dumps(
                {k: v for k, v in result.items() if k != "median_log10_regret_curves"},
                indent=2,
            )
        )
        print(
            f"\n{'function':>10} {'q':>3} {'arm':>11} {'budget':>6} "
            f"{'median log10 regret':>20} {'IQR':>16} {'s/proposal':>10}"
        )
        for r in rows:
            iqr = f"[{r['iqr'][0]:.2f}, {r['iqr'][1]:.2f}]"
            print(
                f"{r['function']:>10} {r['q']:>3} {r['arm']:>11} {r['budget']:>6} "
                f"{r['median_log10_regret']:>20.2f} {iqr:>16} "
                f"{r['seconds_per_proposal']:>10.3f}"
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
