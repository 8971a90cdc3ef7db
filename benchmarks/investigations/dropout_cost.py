"""What dropout costs the engine, with each way of drawing its uniforms, side by side.

Dropout draws a uniform for every unit of every row of every hidden layer, every step:
for the reference MLP (3 hidden layers of 64, batches of 64) 12,288 a trial a step.
Arms, on throughput.py's reference MLP and hyperparameters:

  no_dropout  dropout 0 (the bucket's program has no dropout at all)
  threefry    dropout ``--rate`` drawn as before 2026-11-29: ``jax.random.uniform`` of
              ``fold_in(key, layer * 2**16 + row)``, threefry's ~100 integer operations
              a word (``jaxhp.tasks.mlp.DROPOUT_DRAWS = "threefry"``)
  hash        dropout ``--rate`` drawn by ``jaxhp.bits.uniforms`` (the default): a
              counter hashed by MurmurHash3's finaliser, ~10 operations a word

Best of ``--repeats`` interleaved rounds per arm, trials/s and the ratio to
``no_dropout``, and each arm's mean best validation accuracy over the population (the
two dropout arms draw different masks, so their accuracies agree only statistically).
JSON (``--out``) and a table:

    python benchmarks/investigations/dropout_cost.py --populations 8 64
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

# benchmarks/ (throughput, runinfo) and the repository root (jaxhp).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import throughput as tp  # noqa: E402
from runinfo import run_header  # noqa: E402

import jaxhp  # noqa: E402
from jaxhp import engine  # noqa: E402
from jaxhp.tasks import mlp  # noqa: E402

ARMS = {
    "no_dropout": (0.0, "hash"),
    "threefry": (None, "threefry"),
    "hash": (None, "hash"),
}


def arm(task, space, hp_np, rate, draws):
    """One engine round of the population with dropout ``rate``, its uniforms drawn the
    ``draws`` way (the bucket's trainable reads ``DROPOUT_DRAWS`` when it is made, and
    keys its program with it). A task whose checked space allows dropout compiles it
    in, whatever the rate: the no-dropout arm's task is checked without it."""
    ids = np.arange(len(hp_np["momentum"]))
    hp = task.hparams(space, {**hp_np, "dropout": np.full(len(ids), rate, np.float32)})

    def run():
        saved, mlp.DROPOUT_DRAWS = mlp.DROPOUT_DRAWS, draws
        try:
            return engine.run_population(
                task, hp, ids, seed=0, bucketing="none", segment_epochs=tp.EPOCHS
            )[0]
        finally:
            mlp.DROPOUT_DRAWS = saved

    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--populations", type=int, nargs="*", default=[8, 64])
    ap.add_argument("--rate", type=float, default=0.1, help="dropout rate")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    plain, plain_space, _ = tp.reference_task()
    task, _, _ = tp.reference_task()
    space = jaxhp.Space(**dict(plain_space.items()), dropout=jaxhp.Float(0, 0.5))
    task.check_space(space)
    result = run_header("dropout_cost", rate=args.rate, model=tp.MODEL, rows=[])
    for P in args.populations:
        hp_np = tp.hparams(P, P)
        fns = {
            name: arm(task, space, hp_np, args.rate, draws)
            if rate is None
            else arm(plain, plain_space, hp_np, rate, draws)
            for name, (rate, draws) in ARMS.items()
        }
        row = {"population": P}
        for name, fn in fns.items():  # compile, and the trials' best values
            t0 = time.perf_counter()
            out = fn()
            row[f"{name}_first_s"] = time.perf_counter() - t0
            row[f"{name}_accuracy"] = float(np.mean([o.value for o in out]))
        times = tp.best_times(list(fns.values()), args.repeats)
        for name, t in zip(fns, times, strict=True):
            row[name] = P / t
        for name in fns:
            row[f"{name}_vs_no_dropout"] = row[name] / row["no_dropout"]
        result["rows"].append(row)
        tp.save_json(args.out, {**result, "partial": True})
        print(f"P={P}: {row}", file=sys.stderr, flush=True)
    tp.save_json(args.out, result)
    print(f"\n{'P':>6} " + " ".join(f"{a:>24}" for a in ARMS))
    for row in result["rows"]:
        cells = [
            f"{row[a]:9.1f} ({row[a + '_vs_no_dropout']:.2f}x) {row[a + '_accuracy']:.3f}"
            for a in ARMS
        ]
        print(f"{row['population']:>6} " + " ".join(f"{c:>24}" for c in cells))
    print(
        f"trials/s (ratio to no_dropout) and mean best validation accuracy; dropout "
        f"{args.rate}, {jax.devices()[0].device_kind}"
    )
    return result


if __name__ == "__main__":
    main()
