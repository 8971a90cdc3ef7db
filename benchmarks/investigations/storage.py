"""What storing a round costs the host, per layout of the per-epoch curves.

A study commits every finished round to SQLite (``jaxhp/storage.py``). On a GPU a round
of thousands of trials trains in a fraction of a second, so the host's share of a round
matters. This script trains one real round (MLP on scikit-learn's digits, the given
population and epochs), then times committing those trials, arms interleaved, each into
a fresh database:

  series      the store's layout: one row per trial and series, the values as a
              blob of raw float32 numbers (``Study.commit_round``)
  per_epoch   the layout before it, one ``curves`` row per trial, series and epoch,
              each value converted in Python (written here as the store wrote it)
  no_curves   trials, strategy state and round only: the floor under both

It also times the training round itself (steady state) for scale, and loading the study
back (``jaxhp.load``) with each layout.

    python benchmarks/investigations/storage.py --population 4096 --epochs 10
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import tempfile
import time

import numpy as np
from sklearn.datasets import load_digits

# benchmarks/ (throughput, runinfo) and the repository root (jaxhp).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from runinfo import run_header  # noqa: E402

import jaxhp  # noqa: E402
from jaxhp import storage  # noqa: E402

LEGACY_CURVES = """
CREATE TABLE IF NOT EXISTS curves (
    study_id INTEGER NOT NULL,
    trial_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (study_id, trial_id, name, epoch)
);
"""


def commit(path, trials, layout):
    """Commit ``trials`` as one round into a fresh study at ``path``; seconds taken."""
    study = storage.Study(path, "bench")
    study.create(metric="accuracy", direction="maximize", config={})
    t0 = time.perf_counter()
    stored = trials
    if layout != "series":  # the trials without curves, and maybe the old curve rows
        stored = [jaxhp.results.Trial(**{**t.__dict__, "curves": {}}) for t in trials]
        with study._transaction() as db:
            # The previous store's curve rows, built as it built them.
            if layout == "per_epoch":
                db.executemany(
                    "INSERT INTO curves VALUES (?, ?, ?, ?, ?)",
                    [
                        (study.study_id, t.trial_id, e, name, storage._num(float(v)))
                        for t in trials
                        for name, s in storage._flat_curves(t.curves).items()
                        for e, v in enumerate(s)
                    ],
                )
    study.commit_round(
        0, stored, started=len(trials), strategy_state={}, wall_time=0, compile_time=0
    )
    seconds = time.perf_counter() - t0
    study.close()
    return seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--population", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="write the JSON here as well")
    args = ap.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    task = jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.2, seed=0)
    space = jaxhp.Space(
        learning_rate=jaxhp.Float(3e-3, 1e-1, log=True),
        momentum=jaxhp.Float(0.8, 0.95),
        weight_decay=jaxhp.Float(1e-5, 1e-3, log=True),
        optimizer=jaxhp.Fixed("sgd"),
        n_layers=jaxhp.Fixed(1),
        width=jaxhp.Fixed(16),
        batch_size=jaxhp.Fixed(256),
        epochs=jaxhp.Fixed(args.epochs),
    )
    P = args.population

    def round_():
        return jaxhp.tune(
            task, space, "random", n_trials=P, population=P, bucketing="none"
        )

    round_()
    t0 = time.perf_counter()
    res = round_()
    train_s = time.perf_counter() - t0
    trials = res.trials

    times = {"series": [], "per_epoch": [], "no_curves": []}
    load_s = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for arm in times:
                path = os.path.join(tmp, f"{arm}{r}.db")
                if arm == "per_epoch":
                    con = sqlite3.connect(path)
                    con.executescript(LEGACY_CURVES)
                    con.close()
                times[arm].append(commit(path, trials, arm))
        for arm in ("series", "per_epoch"):
            t0 = time.perf_counter()
            loaded = jaxhp.load(os.path.join(tmp, f"{arm}0.db"))
            load_s[arm] = time.perf_counter() - t0
            assert len(loaded) == P
            a, b = loaded.trials[0].curves, trials[0].curves
            assert all(np.allclose(a[k], b[k], equal_nan=True) for k in b), arm

    n_values = sum(
        len(s) for t in trials for s in storage._flat_curves(t.curves).values()
    )
    best = {k: min(v) for k, v in times.items()}
    result = {
        **run_header("storage"),
        "sqlite": sqlite3.sqlite_version,
        "population": P,
        "epochs": args.epochs,
        "curve_values": n_values,
        "round_train_s": train_s,
        "commit_s": best,
        "commit_s_all": times,
        "load_s": load_s,
        "per_epoch_over_series": best["per_epoch"] / best["series"],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(
        f"\n{P} trials x {args.epochs} epochs ({n_values} curve values); training "
        f"the round took {train_s:.2f} s here. Committing it, best of {args.repeats}:"
    )
    print(f"{'layout':>12} {'commit s':>10} {'us/trial':>10} {'load s':>8}")
    for arm, s in best.items():
        ld = load_s.get(arm)
        print(
            f"{arm:>12} {s:10.3f} {1e6 * s / P:10.1f} "
            f"{'' if ld is None else f'{ld:8.2f}':>8}"
        )
    ratio = best["per_epoch"] / best["series"]
    print(f"per_epoch / series: {ratio:.1f}x" if math.isfinite(ratio) else "")


if __name__ == "__main__":
    main()
