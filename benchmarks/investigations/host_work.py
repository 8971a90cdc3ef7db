"""The host's share of a round at large populations, with the device's share made small.

On an H200 a round of 16,384 reference MLPs trains in about a second, and what the host
does per trial around it (planning the buckets, building each trial's outcome, then
tune()'s records) is paid while the device idles. This script times that host work on a
model so small (width 4, one step per epoch) that training costs little, so the phases
read as host time:

  plan         engine.plan_buckets (bucketing "auto"), in run_population
  outcomes     the chunk's outcomes from its fetched flags and curves, in run_population
  to_device, init, segment, fetch   the rest of run_population's phases
  records      a TrialOutcome per trial (``list(outcomes)``): what a consumer that wants
               records pays, outside the engine since 2026-11-29
  tune_host    one tune() round minus its run_population: ask, decode, hparams, the
               Trial records, tell
  commit       ``Study.commit_round``: the round written to SQLite (``storage=``)

Then whole sweeps of ``--rounds`` rounds of ``--round-population`` trials, arms
interleaved: without storage, with storage committed in the round loop
(``tune.COMMIT_IN_BACKGROUND``'s choice on a CPU), and committed on a writer thread
while the next round trains (its choice on accelerators). What storage costs a sweep is
its wall time minus the one without; ``storage_wait`` is the part the round loop spent
waiting for a commit. The writer needs a core of its own: do not pin this part to one.

Phases are the engine's own annotations (``engine._phase``), timed here by swapping
in a stopwatch, on a homogeneous population (one bucket). Planning alone is timed
again on a mixed one (depth 1-4, width 16-256 log, batch 32-128: several buckets, so
the planner merges; not trained, which would take minutes on a CPU). Best of
``--repeats`` per phase, in ms and µs per trial; JSON (``--out``) and a table:

    python benchmarks/investigations/host_work.py --populations 1024 16384
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import sys
import tempfile
import time

import numpy as np

# benchmarks/ (throughput, runinfo) and the repository root (jaxhp).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from runinfo import run_header  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import jaxhp  # noqa: E402
from jaxhp import engine  # noqa: E402
from jaxhp.storage import Study  # noqa: E402

TOTALS: collections.Counter = collections.Counter()


class Stopwatch:
    """Stands in for ``engine._phase``: adds each phase's wall time to ``TOTALS``."""

    def __init__(self, name: str):
        self.name = name.removeprefix("jaxhp.")

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        TOTALS[self.name] += time.perf_counter() - self.t


def spaces(epochs: int = 1, width: int = 4, layers: int = 1) -> dict[str, jaxhp.Space]:
    common = dict(
        learning_rate=jaxhp.Float(1e-3, 1e-1, log=True),
        epochs=jaxhp.Fixed(epochs),
    )
    return {
        "homogeneous": jaxhp.Space(
            n_layers=jaxhp.Fixed(layers),
            width=jaxhp.Fixed(width),
            batch_size=jaxhp.Fixed(64),
            **common,
        ),
        "mixed": jaxhp.Space(
            n_layers=jaxhp.Int(1, 4),
            width=jaxhp.Int(16, 256, log=True),
            batch_size=jaxhp.Choice([32, 64, 128]),
            optimizer=jaxhp.Choice(["adam", "sgd"]),
            **common,
        ),
    }


def population(task, space, p: int) -> dict[str, np.ndarray]:
    return task.hparams(
        space, space.decode(np.random.default_rng(0).random((p, space.dim)))
    )


def measure_plan(task, space, p: int, repeats: int) -> dict[str, float]:
    hp = population(task, space, p)
    n_rows = int(task.data.n_train.max())
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        engine.plan_buckets(task, hp, bucketing="auto", n_rows=n_rows)
        best = min(best, time.perf_counter() - t)
    return {"plan": best}


def measure(task, space, p: int, repeats: int) -> dict[str, float]:
    """Best seconds of each phase over ``repeats`` rounds of ``p`` trials."""
    hp = population(task, space, p)
    ids = np.arange(p)
    best: dict[str, float] = {}

    def keep(name, seconds):
        best[name] = min(best.get(name, np.inf), seconds)

    engine.run_population(task, hp, ids, seed=0)  # compile
    kw = dict(strategy="random", n_trials=p, population=p, seed=0, verbose=False)
    jaxhp.tune(task, space, **kw)  # compile tune's bucket shapes too
    for _ in range(repeats):
        TOTALS.clear()
        t = time.perf_counter()
        outcomes, _, _ = engine.run_population(task, hp, ids, seed=0)
        keep("run_population", time.perf_counter() - t)
        for name, s in TOTALS.items():
            keep(name, s)
        t = time.perf_counter()
        records = list(outcomes)
        keep("records", time.perf_counter() - t)
        del records, outcomes

        inner = engine.run_population
        spent = [0.0]

        def timed(*a, inner=inner, spent=spent, **k):
            t = time.perf_counter()
            out = inner(*a, **k)
            spent[0] += time.perf_counter() - t
            return out

        jaxhp.tune.__globals__["run_population"] = timed
        try:
            t = time.perf_counter()
            jaxhp.tune(task, space, **kw)
            keep("tune_host", time.perf_counter() - t - spent[0])
        finally:
            jaxhp.tune.__globals__["run_population"] = inner
        commit = Study.commit_round

        def timed_commit(*a, **k):
            t = time.perf_counter()
            commit(*a, **k)
            keep("commit", time.perf_counter() - t)

        Study.commit_round = timed_commit
        try:
            with tempfile.TemporaryDirectory() as d:
                jaxhp.tune(task, space, storage=os.path.join(d, "s.db"), **kw)
        finally:
            Study.commit_round = commit
    return best


def measure_rounds(task, space, p: int, rounds: int, repeats: int) -> dict:
    """Best wall seconds of a sweep of ``rounds`` rounds per storage arm."""
    tune_module = importlib.import_module("jaxhp.tune")  # jaxhp.tune is the function

    kw = dict(strategy="random", n_trials=p * rounds, population=p, verbose=False)
    jaxhp.tune(task, space, **kw)  # compile
    defaults = tune_module.COMMIT_IN_BACKGROUND
    best: dict[str, float] = {}
    waits: dict[str, float] = {}
    for r in range(repeats):
        for arm in ("none", "in_loop", "background"):
            tune_module.COMMIT_IN_BACKGROUND = dict.fromkeys(
                ("cpu", "default"), arm == "background"
            )
            with tempfile.TemporaryDirectory() as d:
                store = None if arm == "none" else os.path.join(d, "s.db")
                t = time.perf_counter()
                res = jaxhp.tune(task, space, storage=store, seed=r, **kw)
                wall = time.perf_counter() - t
            if wall < best.get(arm, np.inf):
                best[arm] = wall
                waits[arm] = res.stats.get("storage_wait", 0.0)
    tune_module.COMMIT_IN_BACKGROUND = defaults
    return {
        "wall": best,
        "storage_wait": waits,
        "storage_cost": {a: best[a] - best["none"] for a in ("in_loop", "background")},
    }


PHASES = (
    "plan",
    "hp_to_device",
    "init",
    "segment",
    "fetch",
    "outcomes",
    "run_population",
    "records",
    "tune_host",
    "commit",
)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--populations", type=int, nargs="+", default=[1024, 16384])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--round-population", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=4, help="0: skip the sweeps")
    ap.add_argument(
        "--sweep-epochs",
        type=int,
        default=5,
        help="epochs of each sweep trial: enough training for a commit to hide behind",
    )
    ap.add_argument(
        "--sweep-model",
        type=int,
        nargs=2,
        default=[4, 1],
        metavar=("WIDTH", "LAYERS"),
        help="the sweeps' MLP (on a GPU, 64 3: the reference MLP)",
    )
    ap.add_argument(
        "--sweep-rows",
        type=int,
        default=80,
        help="digits rows the sweeps train on (on a GPU, 1797: all, as throughput.py)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    engine._phase = Stopwatch
    # One program per bucket, as on an accelerator: no cache-sized CPU chunks.
    engine.CPU_CHUNK_BYTES_PER_CORE = 1 << 50
    X, y = load_digits(return_X_y=True)
    task = jaxhp.tasks.MLPClassifier(X[:80], y[:80], val_fraction=0.2)
    rows = []
    for name, space in spaces().items():
        for p in args.populations:
            run = measure if name == "homogeneous" else measure_plan
            best = run(task, space, p, args.repeats)
            rows.append({"population": name, "P": p, "seconds": best})
            line = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in best.items())
            print(f"{name} P={p}: {line}", flush=True)
    sweeps = None
    if args.rounds:
        n = args.sweep_rows
        sweeps = measure_rounds(
            jaxhp.tasks.MLPClassifier(X[:n], y[:n], val_fraction=0.2),
            spaces(args.sweep_epochs, *args.sweep_model)["homogeneous"],
            args.round_population,
            args.rounds,
            args.repeats,
        )
        sweeps.update(
            P=args.round_population,
            rounds=args.rounds,
            epochs=args.sweep_epochs,
            model=args.sweep_model,
            rows=n,
        )
    result = {**run_header("host_work", repeats=args.repeats), "rows": rows}
    result["sweeps"] = sweeps
    print(json.dumps(result, indent=1))
    print(f"\n{'population':12} {'P':>6} " + " ".join(f"{p:>14}" for p in PHASES))
    print(" " * 20 + " ".join(f"{'ms (us/trial)':>14}" for _ in PHASES))
    for r in rows:
        cells = [
            f"{r['seconds'][k] * 1e3:6.1f} ({r['seconds'][k] / r['P'] * 1e6:4.2f})"
            if k in r["seconds"]
            else "-"
            for k in PHASES
        ]
        print(
            f"{r['population']:12} {r['P']:>6} " + " ".join(f"{c:>14}" for c in cells)
        )
    if sweeps:
        print(
            f"\nsweeps of {args.rounds} rounds of {args.round_population} trials, "
            "wall s (storage's cost; waited for commits):"
        )
        for arm, wall in sweeps["wall"].items():
            extra = (
                f" ({sweeps['storage_cost'][arm]:+.3f}; "
                f"{sweeps['storage_wait'][arm]:.3f})"
                if arm != "none"
                else ""
            )
            print(f"  {arm:11} {wall:.3f}{extra}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
