"""Throughput of the population engine against the ways people usually train many trials.

Arms, side by side in one run, on the same MLP, data, steps and hyperparameters (an MLP
64-64-64-10 on scikit-learn's digits, 1437 training rows, batch 64, SGD with momentum and
weight decay, 10 epochs, each trial with its own learning rate, momentum and decay and its
own data order):

  engine      jaxhp's engine (``run_population``): masks, per-epoch validation, best-epoch
              weights, divergence checks included
  engine_eval_end  the same, validating only after the last epoch (``eval_every=10``),
              which is the work the vmap arm does
  engine_bf16 the engine with ``compute_dtype="bfloat16"`` (bf16 matmuls and
              activations, float32 weights, optimizer and loss); its accuracy effect is
              reported as the population's mean best validation accuracy against float32
  engine_<x>  the engine on the tasks of ``EXTRA_ENGINE_TASKS`` (none by default): another
              Trainable's step timed against the built-in one's, e.g. the fused Pallas
              step of experiments/fused/throughput_fused.py
  vmap        a plain ``jit(vmap(train))`` written here, validation only at the end
  vmap_val    the same, validating after every epoch and keeping the best epoch's
              accuracy and weights (the engine's default work, written by hand)
  vmap_val_sof  vmap_val shuffling with the engine's own sort-free (swap-or-not)
              shuffle instead of ``jax.random.permutation`` (a sort): how much of the
              engine's ratio to vmap_val is its cheaper shuffle, not its loop
  vmap_val_chunked  (CPU, when the engine splits the population into cache-sized
              chunks, ``EngineOptions.cpu_chunk_bytes_per_core``) vmap_val run over the same
              chunks one after another: how much of the engine's ratio is its chunking
  scan        one ``jit(lax.scan)`` training per trial, trials one after another
  pyloop      a Python loop over steps calling a jitted step (a typical tutorial loop)
  vmap_highest  (accelerators only) the vmap arm traced under
              ``jax.default_matmul_precision("highest")``: full float32 matmuls, to show
              what the backend's default float32 precision is worth

Then a mixed-architecture population (depth 1-4, width 16-256, batch 32-128) through the
engine with each bucketing policy, reported as trials/s and as the fraction of the
homogeneous population's useful FLOP/s (FLOPs of each trial's *real* network, not the
padding), at equal useful work.

Steady-state times (compile excluded, reported apart); each figure is the best of
``--repeats`` runs (more at small populations, whose rounds are short: about
``--min-seconds`` of timing per arm). Prints a table and writes JSON (``--out``).

    python benchmarks/throughput.py                 # full CPU run (a few minutes)
    python benchmarks/throughput.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from runinfo import run_header  # noqa: E402

import jaxhp  # noqa: E402
from jaxhp.engine import run_population  # noqa: E402
from jaxhp.engine.shuffle import member_perm  # noqa: E402

WIDTH, DEPTH, BATCH, EPOCHS = 64, 3, 64, 10
#: More engine arms, ``{"engine_<x>": make_task(X, y, **task_kwargs)}``: each is timed beside
#: ``engine`` on the same trials and reported against the baselines, with its mean best
#: accuracy. A script that imports this one fills it (experiments/fused).
EXTRA_ENGINE_TASKS: dict[str, Callable] = {}


# --------------------------------------------------------------------------- the baseline
def init_params(key, n_in, n_out):
    sizes = [n_in] + [WIDTH] * DEPTH + [n_out]
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (a, b)) / math.sqrt(a), jnp.zeros(b))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def forward(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def loss_fn(params, x, y, mask):
    logits = forward(params, x)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]
    return jnp.sum(ce * mask) / jnp.maximum(mask.sum(), 1)


def sgd_step(params, mom, x, y, mask, hp):
    grads = jax.grad(loss_fn)(params, x, y, mask)
    grads = jax.tree.map(lambda g, p: g + hp["weight_decay"] * p, grads, params)
    mom = jax.tree.map(lambda m, g: hp["momentum"] * m + g, mom, grads)
    params = jax.tree.map(lambda p, m: p - hp["learning_rate"] * m, params, mom)
    return params, mom


class Baseline(NamedTuple):
    """The hand-written trainings of one trial (``vmap`` them for a population)."""

    train: Callable  # (key, hp) -> validation accuracy after the last epoch
    train_val: Callable  # (key, hp) -> (best epoch's accuracy, its weights)
    batch_at: Callable  # (perm, t) -> step t's batch (rows, labels, row mask)
    steps: int  # steps per epoch
    train_params: Callable  # (key, hp) -> the weights after the last epoch


def make_train(xt, yt, xv, yv, n_out, permutation=jax.random.permutation):
    """The hand-written baselines; ``permutation(key, n)`` shuffles each epoch."""
    n = xt.shape[0]
    steps = -(-n // BATCH)

    def batch_at(perm, t):
        idx = t * BATCH + jnp.arange(BATCH)
        rows = perm[jnp.minimum(idx, n - 1)]
        return xt[rows], yt[rows], (idx < n).astype(jnp.float32)

    def start(key):
        params = init_params(key, xt.shape[1], n_out)
        return params, jax.tree.map(jnp.zeros_like, params)

    def train_epoch(params, mom, key, e, hp):
        """One epoch of SGD steps over a fresh shuffle of the training rows."""
        perm = permutation(jax.random.fold_in(key, e), n)

        def step(c, t):
            return sgd_step(*c, *batch_at(perm, t), hp), None

        return jax.lax.scan(step, (params, mom), jnp.arange(steps))[0]

    def accuracy(params):
        return jnp.mean(jnp.argmax(forward(params, xv), -1) == yv)

    def train_params(key, hp):
        def epoch(carry, e):
            return train_epoch(*carry, key, e, hp), None

        (params, _), _ = jax.lax.scan(epoch, start(key), jnp.arange(EPOCHS))
        return params

    def train(key, hp):
        return accuracy(train_params(key, hp))

    def train_val(key, hp):
        """``train`` validating after every epoch and keeping the best epoch's accuracy
        and weights: what one writes by hand to pick the best epoch (the engine's
        default work, without its masks, divergence checks and stopping)."""

        def epoch(carry, e):
            params, mom, best_acc, best_params = carry
            params, mom = train_epoch(params, mom, key, e, hp)
            acc = accuracy(params)
            better = acc > best_acc
            best_params = jax.tree.map(
                lambda a, b: jnp.where(better, a, b), params, best_params
            )
            return (params, mom, jnp.maximum(acc, best_acc), best_params), None

        params, mom = start(key)
        carry = (params, mom, jnp.float32(-1.0), params)
        (_, _, best_acc, best_params), _ = jax.lax.scan(
            epoch, carry, jnp.arange(EPOCHS)
        )
        return best_acc, best_params

    return Baseline(train, train_val, batch_at, steps, train_params)


# --------------------------------------------------------------------------- timing
def best_time(fn, repeats):
    return best_times([fn], repeats)[0]


def best_times(fns, repeats):
    """Best-of-``repeats`` seconds of each function, the arms interleaved call by call so
    that a slow spell of a shared machine hits every arm alike."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t0)
    return [min(ts) for ts in times]


def hparams(n, seed):
    r = np.random.default_rng(seed)
    return {
        "learning_rate": np.exp(r.uniform(np.log(3e-3), np.log(1e-1), n)).astype(
            np.float32
        ),
        "momentum": r.uniform(0.8, 0.95, n).astype(np.float32),
        "weight_decay": np.exp(r.uniform(np.log(1e-5), np.log(1e-3), n)).astype(
            np.float32
        ),
    }


def baseline_data(task):
    """The first fold's real training and validation rows, as the baselines take them."""
    d = task.data
    return (
        jnp.asarray(d.x_train[0][: d.n_train[0]]),
        jnp.asarray(d.y_train[0][: d.n_train[0]]),
        jnp.asarray(d.x_val[0][d.val_mask[0]]),
        jnp.asarray(d.y_val[0][d.val_mask[0]]),
    )


MODEL = (
    f"MLP {DEPTH}x{WIDTH} on digits, batch {BATCH}, {EPOCHS} epochs, SGD+momentum+wd"
)


def reference_task(task_class=None, **kw):
    """The reference MLP's task on digits (an ``MLPClassifier``, or ``task_class``;
    ``kw``: more task arguments, e.g. ``compute_dtype``), its space (checked), and the
    hand-written baselines trained on the same rows."""
    X, y = load_digits(return_X_y=True)
    cls = jaxhp.tasks.MLPClassifier if task_class is None else task_class
    task = cls(X, y, val_fraction=0.2, seed=0, **kw)
    space = homogeneous_space()
    task.check_space(space)
    return task, space, make_train(*baseline_data(task), task.n_out)


def trial_keys(n):
    """The baselines' per-trial keys."""
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(
        jnp.arange(n, dtype=jnp.uint32)
    )


def save_json(path, result):
    """Write ``result`` to ``path`` (nothing when ``path`` is None)."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)


def homogeneous_space():
    """The reference MLP's space: its structure fixed, SGD's numbers per trial."""
    return jaxhp.Space(
        learning_rate=jaxhp.Float(3e-3, 1e-1, log=True),
        momentum=jaxhp.Float(0.8, 0.95),
        weight_decay=jaxhp.Float(1e-5, 1e-3, log=True),
        optimizer=jaxhp.Fixed("sgd"),
        n_layers=jaxhp.Fixed(DEPTH),
        width=jaxhp.Fixed(WIDTH),
        batch_size=jaxhp.Fixed(BATCH),
        epochs=jaxhp.Fixed(EPOCHS),
    )


def useful_flops(task, hp):
    """Training FLOPs of each trial's real network: 6 x params x rows x epochs."""
    n = int(task.data.n_train[0])
    d, c = task.n_features, task.n_out
    w, depth = hp["width"].astype(float), hp["n_layers"].astype(float)
    params = d * w + (depth - 1) * w * w + w * c
    rows = np.ceil(n / hp["batch_size"]) * hp["batch_size"]  # padded last batch counts
    rows = np.minimum(rows, n)
    return 6.0 * params * rows * hp["epochs"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--populations", type=int, nargs="*", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--min-seconds",
        type=float,
        default=3.0,
        help="repeat the main arms until each has about this much timing (small P)",
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--mixed-population",
        type=int,
        default=None,
        help="population of the mixed-architecture part (default: 32 on a CPU, 1024 "
        "else; 0 skips it)",
    )
    ap.add_argument("--out", default=None, help="write the JSON here as well")
    args = ap.parse_args(argv)
    backend = jax.default_backend()
    pops = args.populations or (
        [1, 8, 32]
        if args.quick
        else [1, 8, 64, 256]
        if backend == "cpu"
        else [1, 64, 1024, 4096, 16384]
    )
    repeats = 1 if args.quick else args.repeats

    X, y = load_digits(return_X_y=True)
    task = jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.2, seed=0)
    space = homogeneous_space()
    task.check_space(space)
    task_bf16 = jaxhp.tasks.MLPClassifier(
        X, y, val_fraction=0.2, seed=0, compute_dtype="bfloat16"
    )
    task_bf16.check_space(space)
    extra_tasks = {}
    for name, make in EXTRA_ENGINE_TASKS.items():
        extra_tasks[name] = make(X, y, val_fraction=0.2, seed=0)
        extra_tasks[name].check_space(space)
    xt, yt, xv, yv = baseline_data(task)
    train, train_val, batch_at, steps, _ = make_train(xt, yt, xv, yv, task.n_out)
    train_val_sof = make_train(
        xt, yt, xv, yv, task.n_out, lambda k, n: member_perm(k, n, n)
    ).train_val
    flops_trial = 6.0 * (64 * 64 + 2 * 64 * 64 + 64 * 10) * xt.shape[0] * EPOCHS

    header = run_header("throughput", model=MODEL)

    rows = []
    seq_train = jax.jit(train)
    step_jit = jax.jit(sgd_step)
    vmap_train = jax.jit(jax.vmap(train))
    vmap_train_val = jax.jit(jax.vmap(train_val))
    vmap_train_val_sof = jax.jit(jax.vmap(train_val_sof))
    vmap_train_highest = jax.jit(jax.vmap(train))

    def highest(k, h):
        with jax.default_matmul_precision("highest"):
            return vmap_train_highest(k, h)

    for P in pops:
        hp_np = hparams(P, P)
        hp_task = task.hparams(space, hp_np)
        hp_dev = {k: jnp.asarray(v) for k, v in hp_np.items()}
        keys = trial_keys(P)
        ids = np.arange(P)
        row = {"population": P}

        # (a) engine: validating every epoch (the default), and at the end only, as
        # the baseline does (equal work); (b) plain jit(vmap(train)). Each compiled
        # first, then all timed interleaved.
        def engine_round(eval_every=1, hp_task=hp_task, ids=ids, task=task):
            outcomes, reports, _ = run_population(
                task,
                hp_task,
                ids,
                seed=0,
                bucketing="none",
                segment_epochs=EPOCHS,
                eval_every=eval_every,
            )
            engine_reports[:] = reports
            return outcomes

        engine_reports = []
        arms = {
            "engine": engine_round,
            "engine_eval_end": lambda: engine_round(EPOCHS),
            "engine_bf16": lambda: engine_round(task=task_bf16),
            **{
                name: lambda t=t: engine_round(task=t)
                for name, t in extra_tasks.items()
            },
            "vmap": lambda k=keys, h=hp_dev: vmap_train(k, h),
            "vmap_val": lambda k=keys, h=hp_dev: vmap_train_val(k, h),
            "vmap_val_sof": lambda k=keys, h=hp_dev: vmap_train_val_sof(k, h),
        }
        if backend != "cpu":
            arms["vmap_highest"] = lambda k=keys, h=hp_dev: highest(k, h)
        first, outs = {}, {}
        for name, fn in list(arms.items()):
            t0 = time.perf_counter()
            outs[name] = jax.block_until_ready(fn())
            first[name] = time.perf_counter() - t0
            if name == "engine" and engine_reports[0].chunk:
                # The engine split the population into chunks (on a CPU, cache-sized):
                # the same chunks for vmap_val, one after another.
                chunk = row["engine_chunk"] = engine_reports[0].chunk
                parts = [
                    (
                        keys[i : i + chunk],
                        {k: v[i : i + chunk] for k, v in hp_dev.items()},
                    )
                    for i in range(0, P, chunk)
                ]
                arms["vmap_val_chunked"] = lambda parts=parts: [
                    vmap_train_val(k, h) for k, h in parts
                ]
        for name in arms.keys() - first.keys():
            t0 = time.perf_counter()
            outs[name] = jax.block_until_ready(arms[name]())
            first[name] = time.perf_counter() - t0
        # The accuracy effect of bf16: mean best validation accuracy of the population
        row["accuracy_fp32"] = float(np.nanmean([o.value for o in outs["engine"]]))
        row["accuracy_bf16"] = float(np.nanmean([o.value for o in outs["engine_bf16"]]))
        for name in extra_tasks:
            row[f"accuracy_{name[len('engine_') :]}"] = float(
                np.nanmean([o.value for o in outs[name]])
            )
        # A short round is at the mercy of the shared machine's brief slow spells: give
        # it more samples (about --min-seconds of timing per arm, at least --repeats).
        t0 = time.perf_counter()
        jax.block_until_ready(arms["vmap"]())
        one_call = time.perf_counter() - t0
        n_rep = max(repeats, min(20 * repeats, int(args.min_seconds / one_call)))
        row["repeats"] = n_rep
        for name, t in zip(arms, best_times(list(arms.values()), n_rep), strict=True):
            row[name] = P / t
            row[f"{name}_compile_s"] = max(first[name] - t, 0.0)

        # (c) one jit(lax.scan) per trial, sequentially (at most 16 trials timed)
        n_seq = min(P, 4 if args.quick else 16)
        one = lambda i: {k: v[i] for k, v in hp_dev.items()}  # noqa: E731
        jax.block_until_ready(seq_train(keys[0], one(0)))
        t = best_time(
            lambda: [seq_train(keys[i], one(i)) for i in range(n_seq)], repeats
        )
        row["scan"] = n_seq / t

        # (d) per-step Python loop (one trial timed: it is slow)
        hp0 = one(0)
        params = init_params(keys[0], xt.shape[1], task.n_out)
        mom = jax.tree.map(jnp.zeros_like, params)
        jax.block_until_ready(
            step_jit(params, mom, *batch_at(jnp.arange(xt.shape[0]), 0), hp0)
        )

        def pyloop(params=params, mom=mom, keys=keys, hp0=hp0):
            p, m = params, mom
            for e in range(EPOCHS):
                perm = jax.random.permutation(
                    jax.random.fold_in(keys[0], e), xt.shape[0]
                )
                for s in range(steps):
                    p, m = step_jit(p, m, *batch_at(perm, s), hp0)
            return p

        row["pyloop"] = 1.0 / best_time(pyloop, 1)
        row["engine_vs_vmap"] = row["engine"] / row["vmap"]
        row["engine_eval_end_vs_vmap"] = row["engine_eval_end"] / row["vmap"]
        row["engine_vs_vmap_val"] = row["engine"] / row["vmap_val"]
        row["engine_vs_vmap_val_sof"] = row["engine"] / row["vmap_val_sof"]
        if "vmap_val_chunked" in arms:
            row["engine_vs_vmap_val_chunked"] = row["engine"] / row["vmap_val_chunked"]
        row["engine_bf16_vs_vmap_val"] = row["engine_bf16"] / row["vmap_val"]
        row["engine_bf16_tflops"] = row["engine_bf16"] * flops_trial / 1e12
        row["engine_vs_scan"] = row["engine"] / row["scan"]
        row["engine_tflops"] = row["engine"] * flops_trial / 1e12
        for name in extra_tasks:
            row[f"{name}_vs_vmap_val"] = row[name] / row["vmap_val"]
            row[f"{name}_vs_vmap"] = row[name] / row["vmap"]
            row[f"{name}_tflops"] = row[name] * flops_trial / 1e12
        rows.append(row)
        # Saved after every population: a run cut short (a time cap) keeps its rows.
        save_json(args.out, {**header, "homogeneous": rows, "partial": True})
        print(
            f"P={P}: "
            + ", ".join(f"{k}={v:.3g}" for k, v in row.items() if k != "population"),
            file=sys.stderr,
            flush=True,
        )

    # Mixed architectures through the engine, per bucketing policy.
    # On a CPU the fully padded arm of a large mixed population takes many minutes.
    P_mixed = (
        args.mixed_population
        if args.mixed_population is not None
        else min(max(pops), 32)
        if backend == "cpu"
        else min(max(pops), 1024)
    )
    if P_mixed == 0:
        return finish(header, rows, [], None, repeats, args.out)
    r = np.random.default_rng(1)
    mixed = jaxhp.Space(
        learning_rate=jaxhp.Float(3e-3, 1e-1, log=True),
        momentum=jaxhp.Float(0.8, 0.95),
        weight_decay=jaxhp.Float(1e-5, 1e-3, log=True),
        optimizer=jaxhp.Fixed("sgd"),
        n_layers=jaxhp.Int(1, 4),
        width=jaxhp.Int(16, 256, log=True),
        batch_size=jaxhp.Int(32, 128, log=True),
        epochs=jaxhp.Fixed(EPOCHS),
    )
    task.check_space(mixed)
    hp_mixed = task.hparams(mixed, mixed.decode(r.random((P_mixed, mixed.dim))))
    hp_homog = task.hparams(space, hparams(P_mixed, 7))
    ids = np.arange(P_mixed)
    flops_mixed = useful_flops(task, hp_mixed).sum()
    flops_homog = useful_flops(task, hp_homog).sum()

    def timed(hp, bucketing):
        t0 = time.perf_counter()
        _, reports, _ = run_population(
            task, hp, ids, seed=0, bucketing=bucketing, segment_epochs=EPOCHS
        )
        first = time.perf_counter() - t0
        t = best_time(
            lambda: run_population(
                task, hp, ids, seed=0, bucketing=bucketing, segment_epochs=EPOCHS
            )[0],
            min(repeats, 2),
        )
        return t, first, sum(r.part == 0 for r in reports)  # a chunked bucket once

    t_h, _, _ = timed(hp_homog, "none")
    mixed_rows = []
    for policy in ("none", "pow2", "auto"):
        t, first, nb = timed(hp_mixed, policy)
        mixed_rows.append(
            {
                "bucketing": policy,
                "population": P_mixed,
                "buckets": nb,
                "trials_per_s": P_mixed / t,
                "first_call_s": first,
                "steady_s": t,
                "fraction_of_homogeneous": (flops_mixed / t) / (flops_homog / t_h),
            }
        )

    return finish(
        header, rows, mixed_rows, P_mixed / t_h, repeats, args.out, P_mixed=P_mixed
    )


def finish(header, rows, mixed_rows, homog_at_mixed, repeats, out, P_mixed=0):
    """Print and save the JSON, then the tables."""
    result = {
        **header,
        "homogeneous": rows,
        "mixed": mixed_rows,
        "homogeneous_trials_per_s_at_mixed_population": homog_at_mixed,
    }
    print(json.dumps(result, indent=2))
    save_json(out, result)

    # The equal-work ratios: engine / vmap_val (both validate every epoch) and
    # engine_eval_end / vmap (both validate at the end).
    head = [
        "P",
        "engine",
        "eng.evalend",
        "vmap_val",
        "vmap",
        "scan",
        "pyloop",
        "engine/vmapval",
        "engine/vv_sof",
        "evalend/vmap",
        "engine/vmap",
        "engine/scan",
        "TFLOP/s",
        "bf16/vmapval",
        "acc32",
        "acc bf16",
    ]
    print(
        f"\ntrials/s (steady state, best of >= {repeats} runs, arms interleaved; "
        "equal work: engine/vmapval and evalend/vmap; engine/vv_sof: against vmap_val "
        "with the engine's shuffle)"
    )
    print("  ".join(f"{h:>14}" for h in head))
    # (the vmap_highest arm, accelerators only, is in the JSON)
    for r_ in rows:
        vals = [
            r_["population"],
            r_["engine"],
            r_["engine_eval_end"],
            r_["vmap_val"],
            r_["vmap"],
            r_["scan"],
            r_["pyloop"],
            r_["engine_vs_vmap_val"],
            r_["engine_vs_vmap_val_sof"],
            r_["engine_eval_end_vs_vmap"],
            r_["engine_vs_vmap"],
            r_["engine_vs_scan"],
            r_["engine_tflops"],
            r_["engine_bf16_vs_vmap_val"],
            r_["accuracy_fp32"],
            r_["accuracy_bf16"],
        ]
        print("  ".join(f"{v:>14.3g}" for v in vals))
    if EXTRA_ENGINE_TASKS:
        print(
            "\nmore engine arms: trials/s, ratio to vmap_val (equal work) and to the "
            "plain vmap, mean best accuracy"
        )
        for r_ in rows:
            print(
                f"P={r_['population']}: "
                + "; ".join(
                    f"{k} {r_[k]:.4g} ({r_[k + '_vs_vmap_val']:.3g}x vmap_val, "
                    f"{r_[k + '_vs_vmap']:.3g}x vmap, acc "
                    f"{r_['accuracy_' + k[len('engine_') :]]:.4f})"
                    for k in EXTRA_ENGINE_TASKS
                )
            )
    chunked = [r_ for r_ in rows if r_.get("engine_chunk")]
    if chunked:
        print("\nCPU chunks: the engine against vmap_val run over the same chunks")
        for r_ in chunked:
            print(
                f"P={r_['population']}: chunks of {r_['engine_chunk']}, vmap_val "
                f"chunked {r_['vmap_val_chunked']:.3g} trials/s, engine / it "
                f"{r_['engine_vs_vmap_val_chunked']:.3g}"
            )
    if not mixed_rows:
        return result
    print(f"\nmixed architectures, P={P_mixed} (depth 1-4, width 16-256, batch 32-128)")
    print(
        f"{'bucketing':>10} {'buckets':>8} {'trials/s':>10} {'first call s':>13} "
        f"{'fraction of homogeneous':>24}"
    )
    for m in mixed_rows:
        print(
            f"{m['bucketing']:>10} {m['buckets']:>8} {m['trials_per_s']:>10.3g} "
            f"{m['first_call_s']:>13.3g} {m['fraction_of_homogeneous']:>24.3f}"
        )
    return result


if __name__ == "__main__":
    main()
