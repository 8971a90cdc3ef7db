"""What conditional parameters buy the GP: Jenatton et al.'s tree-structured function.

Jenatton, Archambeau, González and Seeger (2017, "Bayesian optimization with
tree-structured dependencies") define a function on a binary tree of depth 2: ``x1``
picks a branch, ``x2`` or ``x3`` (by branch) a leaf, and each leaf uses its own
variable of ``x4..x7`` in ``[-1, 1]`` plus a shared one (``r8`` on the left, ``r9`` on
the right) in ``[0, 1]``:

    x1=0, x2=0: x4**2 + 0.1 + r8        x1=1, x3=0: x6**2 + 0.3 + r9
    x1=0, x2=1: x5**2 + 0.2 + r8        x1=1, x3=1: x7**2 + 0.4 + r9

Its minimum is 0.1. Of its 9 parameters a configuration uses 4; the other 5 are
inactive. Arms, all through ``jaxhp.optimize`` at the same budget and batch size:

  bayes_when   ``strategy="bayes"`` on the space with ``when=`` conditions: inactive
               coordinates are one constant to the GP
  bayes_flat   the same space without conditions: the GP models all 9 coordinates,
               whether a configuration uses them or not
  random       uniform random search (conditions change nothing for it)

Regret is the best value found minus 0.1; the table gives, per arm, the median log10
regret over seeds and its interquartile range at a few budgets, and how many seeds
reached the global leaf's basin (regret < 0.01)::

    python benchmarks/conditional.py --seeds 10 --budget 60 --q 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from runinfo import run_header  # noqa: E402

import jaxhp  # noqa: E402
from jaxhp import Choice, Float, Space  # noqa: E402

OPTIMUM = 0.1
ARMS = ("bayes_when", "bayes_flat", "random")


def space(conditional: bool) -> Space:
    def w(**cond):
        return cond if conditional else None

    return Space(
        x1=Choice([0, 1]),
        x2=Choice([0, 1], when=w(x1=0)),
        x3=Choice([0, 1], when=w(x1=1)),
        x4=Float(-1.0, 1.0, when=w(x2=0)),
        x5=Float(-1.0, 1.0, when=w(x2=1)),
        x6=Float(-1.0, 1.0, when=w(x3=0)),
        x7=Float(-1.0, 1.0, when=w(x3=1)),
        r8=Float(0.0, 1.0, when=w(x1=0)),
        r9=Float(0.0, 1.0, when=w(x1=1)),
    )


def jenatton(p: dict) -> np.ndarray:
    """The tree-structured function on a population ``{name: [P]}`` (NumPy)."""
    left = p["x1"] == 0
    lo = np.where(p["x2"] == 0, p["x4"] ** 2 + 0.1, p["x5"] ** 2 + 0.2) + p["r8"]
    hi = np.where(p["x3"] == 0, p["x6"] ** 2 + 0.3, p["x7"] ** 2 + 0.4) + p["r9"]
    return np.where(left, lo, hi)


def run(arm: str, seed: int, budget: int, q: int) -> dict:
    strategy = "random" if arm == "random" else "bayes"
    sp = space(conditional=arm == "bayes_when")
    t0 = time.perf_counter()
    res = jaxhp.optimize(
        lambda p: jenatton({k: np.asarray(v, float) for k, v in p.items()}),
        sp,
        strategy=strategy,
        n_trials=budget,
        population=q,
        seed=seed,
    )
    values = np.asarray([t.value for t in res.trials], float)
    best = np.minimum.accumulate(values)
    return {
        "arm": arm,
        "seed": seed,
        "seconds": time.perf_counter() - t0,
        "regret": (best - OPTIMUM).tolist(),
    }


def summarize(rows: list[dict], budgets: list[int]) -> dict:
    out = {}
    for arm in ARMS:
        regs = np.asarray([r["regret"] for r in rows if r["arm"] == arm])
        if not len(regs):
            continue
        logr = np.log10(np.maximum(regs, 1e-12))
        out[arm] = {
            "median_log10_regret": {
                b: float(np.median(logr[:, b - 1])) for b in budgets
            },
            "iqr": {
                b: [
                    float(np.percentile(logr[:, b - 1], 25)),
                    float(np.percentile(logr[:, b - 1], 75)),
                ]
                for b in budgets
            },
            "solved": int(np.sum(regs[:, -1] < 0.01)),
            "seeds": len(regs),
            "seconds_median": float(
                np.median([r["seconds"] for r in rows if r["arm"] == arm])
            ),
        }
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=60)
    ap.add_argument("--q", type=int, default=4, help="the population (batch) size")
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    for seed in range(args.seeds):
        for arm in args.arms:  # arms interleaved seed by seed
            rows.append(run(arm, seed, args.budget, args.q))
    budgets = sorted({min(b, args.budget) for b in (20, 40, args.budget)})
    summary = summarize(rows, budgets)
    result = {
        **run_header("conditional", budget=args.budget, q=args.q, seeds=args.seeds),
        "summary": summary,
        "runs": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(summary))
    print()
    head = ["arm"] + [f"log10 regret @{b} [IQR]" for b in budgets] + ["solved", "s/run"]
    print(" | ".join(head))
    for arm, s in summary.items():
        cells = [
            f"{s['median_log10_regret'][b]:.2f} "
            f"[{s['iqr'][b][0]:.2f}, {s['iqr'][b][1]:.2f}]"
            for b in budgets
        ]
        print(
            " | ".join(
                [
                    arm,
                    *cells,
                    f"{s['solved']}/{s['seeds']}",
                    f"{s['seconds_median']:.1f}",
                ]
            )
        )
    print(
        f"Jenatton et al. 2017, minimum {OPTIMUM}; {args.q} per batch, {args.budget} evaluations"
    )


if __name__ == "__main__":
    main()
