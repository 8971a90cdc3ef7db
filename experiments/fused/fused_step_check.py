"""Does the fused population step (``fused_step.py``) train what the vmapped step
trains, on this backend?

Pallas's interpreter (the CPU tests) checks the kernel's arithmetic, not what only the
GPU's compile decides: the barriers between a layer's reads and its in-place writes, the
masked loads and stores of padded tiles, Triton's matmuls. So on a GPU this runs:

1. one step of six members on odd sizes (30 inputs, 3 outputs, 20-row batches with short
   ones, depth 3 with trials of 1-3 layers, one member frozen), classifier and regressor,
   float32 and bf16, SGD alone and Adam/AdamW/SGD mixed with dropout (the kernel draws
   the vmapped step's masks, jaxhp.bits) and every activation: the largest error of the
   new
   weights, moments and loss terms against ``jax.vmap`` of ``MLPTrainable.step``,
   relative to the values' scale;
2. a sweep on digits and on breast cancer (30 features, 2 classes: padded tiles) with
   mixed optimizers, depths, widths, batch sizes, epochs, dropout and activations,
   2-fold CV and early stopping, trained with each step: statuses, epochs and values.

Both compare two float computations in different orders (TF32 matmuls on a GPU for both),
so the bounds are loose; a race or a masking bug gives errors of order one, or NaN.

    python experiments/fused/fused_step_check.py --out fused_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits

import jaxhp
from jaxhp.optim import ADAM, ADAMW, SGD
from jaxhp.trainable import Batch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "benchmarks"))
from fused_task import FusedMLPClassifier, FusedMLPTrainable, plain  # noqa: E402
from runinfo import run_header  # noqa: E402

M, B, N_IN, N_OUT, WIDTH, DEPTH = 6, 20, 30, 3, 32, 3
# Largest error allowed, relative to the largest magnitude of the values compared.
BOUND = {"float32": 2e-2, "bfloat16": 6e-2}


OPTIMIZER_SETS = {"sgd": (SGD,), "mixed": (ADAM, ADAMW, SGD)}


def one_step_inputs(kind: str, dtype: str, optimizers: str = "sgd"):
    """A FusedMLPTrainable, states, a batch, hyperparameters and ``keep`` for ``M``
    members on odd sizes (30 inputs, 3 outputs and 20-row batches pad to 32, 16 and 32
    in the kernel's tiles). Members 1 and 4 have short batches, member 5 an empty one
    (it idles, as a trial past its own steps of an epoch); member 2 is frozen.
    ``optimizers``: "sgd", or "mixed" (Adam, AdamW and SGD, two members each, with
    Adam's moments and step count as after a few steps, dropout rates of 0 to 0.5,
    and ReLU, tanh, GELU and SiLU side by side)."""
    mixed = optimizers == "mixed"
    tr = FusedMLPTrainable(
        kind=kind,
        n_in=N_IN,
        n_out=N_OUT,
        depth=DEPTH,
        width=WIDTH,
        dropout=mixed,
        activations=(0, 1, 2, 3) if mixed else (0,),
        optimizers=OPTIMIZER_SETS[optimizers],
        min_depth=1,
        compute_dtype=dtype,
    )
    r = np.random.default_rng(0)
    hp = {
        "n_layers": jnp.asarray([1, 2, 3, 3, 2, 3], jnp.int32),
        "width": jnp.asarray([32, 17, 8, 32, 32, 20], jnp.int32),
        "learning_rate": jnp.asarray(r.uniform(0.01, 0.3, M), jnp.float32),
        "momentum": jnp.asarray(r.uniform(0.0, 0.95, M), jnp.float32),
        "weight_decay": jnp.asarray(r.uniform(0.0, 1e-2, M), jnp.float32),
        "activation": jnp.asarray([0, 1, 2, 3, 3, 1] if mixed else [0] * M, jnp.int32),
        "optimizer": jnp.asarray(
            [SGD] * M if optimizers == "sgd" else [ADAM, ADAMW, SGD] * (M // 3),
            jnp.int32,
        ),
        "dropout": jnp.asarray(
            [0.1, 0.5, 0.2, 0.0, 0.3, 0.1] if mixed else [0.0] * M, jnp.float32
        ),
    }
    state = jax.vmap(tr.init)(jax.random.split(jax.random.key(1), M), hp)
    opt = state.opt._replace(  # nonzero moments, as after some steps
        mu=jax.tree.map(
            lambda a: 0.1 * jax.random.normal(jax.random.key(2), a.shape, a.dtype),
            state.opt.mu,
        )
    )
    if opt.nu is not None:
        opt = opt._replace(
            count=jnp.full(M, 3, jnp.int32),
            nu=jax.tree.map(
                lambda a: 0.01 * jax.random.uniform(jax.random.key(4), a.shape),
                opt.nu,
            ),
        )
    state = state._replace(opt=opt)
    x = jnp.asarray(r.normal(size=(M, B, N_IN)), jnp.float32)
    if kind == "classifier":
        y = jnp.asarray(r.integers(0, N_OUT, (M, B)), jnp.int32)
    else:
        y = jnp.asarray(r.normal(size=(M, B, N_OUT)), jnp.float32)
    count = jnp.asarray([B, 13, B, B, 7, 0], jnp.int32)
    mask = jnp.arange(B)[None, :] < count[:, None]
    batch = Batch(x, y, mask, jax.random.split(jax.random.key(3), M), None, count)
    keep = jnp.asarray([True, True, False, True, True, True])
    return tr, state, batch, hp, keep


def trains(keep, batch) -> np.ndarray:
    """Which members the fused step trains: kept, with a nonempty batch."""
    return np.asarray(keep) & (np.asarray(batch.count) > 0)


def one_step(kind: str, dtype: str, optimizers: str, platform: str) -> dict:
    """The fused step against the vmapped one: relative errors, and whether the members
    it does not train are left exactly as they were."""
    tr, state, batch, hp, keep = one_step_inputs(kind, dtype, optimizers)

    def step(s, b, h, k):
        args, run = tr.population_step(h, k, platform=platform)
        return run(*args, s, b)

    new, loss = jax.jit(step)(state, batch, hp, keep)
    ref, metrics = jax.jit(jax.vmap(plain(tr).step))(state, batch, hp)
    live = trains(keep, batch)

    def rel(a, b):
        a, b = np.asarray(a, np.float64)[live], np.asarray(b, np.float64)[live]
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))

    def arrays(s):  # weights and moments (Adam's second too, where there is one)
        return jax.tree.leaves((s.params, s.opt.mu, s.opt.nu))

    errs = [rel(loss, metrics["loss"])] + [
        rel(a, b) for a, b in zip(arrays(new), arrays(ref), strict=True)
    ]
    untouched = all(
        np.array_equal(np.asarray(a)[~live], np.asarray(b)[~live])
        for a, b in zip(
            jax.tree.leaves((new.params, new.opt)),
            jax.tree.leaves((state.params, state.opt)),
            strict=True,
        )
    )
    frozen = untouched and not np.asarray(loss)[~live].any()
    # Adam's step count: one more where a member trained, as the vmapped step's.
    count = np.array_equal(
        np.asarray(new.opt.count)[live], np.asarray(ref.opt.count)[live]
    )
    worst = max(errs)
    return {
        "kind": kind,
        "dtype": dtype,
        "optimizers": optimizers,
        "max_rel_error": worst,
        "loss_rel_error": errs[0],
        "finite": bool(np.isfinite(worst)),
        "frozen_exact": bool(frozen),
        "count_exact": bool(count),
        "ok": bool(np.isfinite(worst) and worst < BOUND[dtype] and frozen and count),
    }


def sweep(name: str, X, y, n_trials: int) -> dict:
    """A sweep trained with each step: statuses, epochs run and values compared."""
    space = jaxhp.Space(
        learning_rate=jaxhp.Float(3e-3, 0.3, log=True),
        momentum=jaxhp.Float(0.5, 0.95),
        optimizer=jaxhp.Choice(["adam", "sgd"]),
        n_layers=jaxhp.Int(1, 3),
        width=jaxhp.Choice([16, 64]),
        batch_size=jaxhp.Choice([32, 100]),
        epochs=jaxhp.Int(3, 6),
        dropout=jaxhp.Choice([0.0, 0.2]),
        activation=jaxhp.Choice(["relu", "tanh", "gelu", "silu"]),
    )
    runs, seconds = {}, {}
    for kernel in ("xla", "fused"):
        cls = FusedMLPClassifier if kernel == "fused" else jaxhp.tasks.MLPClassifier
        task = cls(X, y, folds=2)
        t0 = time.perf_counter()
        runs[kernel] = jaxhp.tune(
            task,
            space,
            "random",
            n_trials=n_trials,
            population=n_trials,
            seed=0,
            early_stopping=jaxhp.stopping.Patience(2),
        )
        seconds[kernel] = time.perf_counter() - t0
    a, b = runs["fused"].trials, runs["xla"].trials
    va = np.array([t.value for t in a], float)
    vb = np.array([t.value for t in b], float)
    both = np.isfinite(va) & np.isfinite(vb)
    diff = np.abs(va - vb)[both]
    same_status = float(
        np.mean([s.status == t.status for s, t in zip(a, b, strict=True)])
    )
    out = {
        "dataset": name,
        "trials": n_trials,
        "seconds": seconds,  # first calls: compiles included
        "best": {"fused": runs["fused"].best_value, "xla": runs["xla"].best_value},
        "summary": {"fused": runs["fused"].summary(), "xla": runs["xla"].summary()},
        "same_status": same_status,
        "same_epochs": float(
            np.mean([s.epochs_run == t.epochs_run for s, t in zip(a, b, strict=True)])
        ),
        "value_diff_median": float(np.median(diff)) if diff.size else None,
        "value_diff_max": float(np.max(diff)) if diff.size else None,
        "mean_value": {
            "fused": float(np.mean(va[both])),
            "xla": float(np.mean(vb[both])),
        },
    }
    # Chaotic trials (high learning rates) may part ways; most must not.
    out["ok"] = bool(
        diff.size
        and same_status >= 0.9
        and out["value_diff_median"] < 0.01
        and abs(out["mean_value"]["fused"] - out["mean_value"]["xla"]) < 0.01
    )
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=32, help="trials of each sweep")
    ap.add_argument("--no-sweeps", action="store_true", help="the one-step checks only")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    platform = jax.default_backend()
    result = {
        **run_header("fused_step_check"),
        "platform": platform,
        "steps": [],
        "sweeps": [],
    }

    def add(part, row):  # saved after every row: a time cap keeps what ran
        print(json.dumps(row), flush=True)
        result[part].append(row)
        result["ok"] = all(r["ok"] for r in result["steps"] + result["sweeps"])
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)

    for kind in ("classifier", "regressor"):
        for dtype in ("float32", "bfloat16"):
            for optimizers in OPTIMIZER_SETS:
                add("steps", one_step(kind, dtype, optimizers, platform))
    if not args.no_sweeps:
        for name, loader in (
            ("digits", load_digits),
            ("breast_cancer", load_breast_cancer),
        ):
            X, y = loader(return_X_y=True)
            add("sweeps", sweep(name, X, y, args.trials))
    print(f"fused step {'ok' if result['ok'] else 'NOT ok'} on {platform}")
    return result


if __name__ == "__main__":
    main()
