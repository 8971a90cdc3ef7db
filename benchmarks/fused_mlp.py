"""Experiment: a whole training fused into one Pallas (Triton) kernel, weights on chip.

Issue 6 asks whether keeping each trial's small weights on chip across steps pays on a
GPU. The plain ``jit(vmap(train))`` of throughput.py's reference MLP (64-64-64-10 on
digits, batch 64, SGD with momentum and weight decay, 10 epochs) is bound by memory: every
step reads and writes every trial's weights, momentum and gradients in HBM, a dozen passes
over ~53 kB per trial. Here one kernel program trains one trial for all its epochs: it
loads the trial's weights once, keeps weights and momentum in registers through every
step (forward, backward and update written out by hand, the batch gathered by the trial's
own permutation inside the kernel), and writes them back once at the end. The only HBM
traffic per step is the batch (16 kB).

Arms, side by side in one run, the same trials (keys, hyperparameters, data order) as
throughput.py's ``vmap`` arm (validation after the last epoch):

  vmap            throughput.py's plain ``jit(vmap(train))``
  fused_w4, _w8   the fused kernel with 4 or 8 warps per program (the register budget
                  per trial is the open question: ~27k float32 of weights and momentum)
  fused_w4_bf16   4 warps, the matmuls fed bf16 (float32 weights and accumulation)
  fused_w8_memory 8 warps, weights and momentum in the kernel's output buffers, loaded
                  and stored every step instead of held in registers: one program's
                  ~106 kB should stay in L1/L2, with no register spills

Also checks, before timing, that the kernel's trained weights equal the baseline's step
applied by ``lax.scan`` (same batches) within float tolerance (TF32 matmuls on a GPU).

The kernel is Triton-only (NVIDIA GPUs). On a CPU the script runs the check in Pallas's
interpreter (the kernel's arithmetic, not its speed) and skips the timing:

    python benchmarks/fused_mlp.py                     # CPU: interpreter check
    python benchmarks/fused_mlp.py --populations 1024 4096 16384   # GPU
    python benchmarks/fused_mlp.py --time-interpreted --populations 4  # CPU: the
                                     # GPU path end to end, interpreted (slow, no speed)

Not wired into the engine: it is a measurement of whether that work would pay, for the
next session lent a GPU (benchmarks/gpu_check.sh runs it).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

sys.path.insert(0, os.path.dirname(__file__))

import throughput as tp  # noqa: E402
from runinfo import run_header  # noqa: E402

OUT_PAD = 16  # the 10 classes padded to a tensor-core tile


def _compiler_params(num_warps):
    from jax.experimental.pallas import triton as pltriton

    # (named TritonCompilerParams in older JAX releases)
    cls = getattr(pltriton, "CompilerParams", None) or pltriton.TritonCompilerParams
    return cls(num_warps=num_warps, num_stages=1)


def _dot(a, b, contract, dtype):
    """A matmul contracting ``contract`` = (a's dim, b's dim), its inputs cast to
    ``dtype`` (float32: the backend's default precision, TF32 on a GPU), float32 out."""
    # bf16 inputs name their algorithm: Pallas's Triton lowering would otherwise tag
    # the dot TF32, which is meant for float32 inputs.
    bf16 = jnp.dtype(dtype) == jnp.bfloat16
    return jax.lax.dot_general(
        a.astype(dtype),
        b.astype(dtype),
        (((contract[0],), (contract[1],)), ((), ())),
        precision=jax.lax.DotAlgorithmPreset.BF16_BF16_F32 if bf16 else None,
        preferred_element_type=jnp.float32,
    )


def _grads(x, y, mask, params, n_out, dot_dtype):
    """The masked mean cross-entropy's gradient for every weight, written out."""
    w1, b1, w2, b2, w3, b3, w4, b4 = params

    def mm(a, b):
        return _dot(a, b, (1, 0), dot_dtype)

    def mm_nt(a, b):  # a @ b.T
        return _dot(a, b, (1, 1), dot_dtype)

    def mm_tn(a, b):  # a.T @ b
        return _dot(a, b, (0, 0), dot_dtype)

    cols = jnp.arange(OUT_PAD)
    h1 = jnp.maximum(mm(x, w1) + b1[None, :], 0.0)
    h2 = jnp.maximum(mm(h1, w2) + b2[None, :], 0.0)
    h3 = jnp.maximum(mm(h2, w3) + b3[None, :], 0.0)
    logits = mm(h3, w4) + b4[None, :]
    logits = jnp.where(cols[None, :] < n_out, logits, -jnp.inf)
    z = logits - jnp.max(logits, axis=1)[:, None]
    ez = jnp.exp(z)
    prob = ez / jnp.sum(ez, axis=1)[:, None]
    onehot = (y[:, None] == cols[None, :]).astype(jnp.float32)
    # d(mean masked cross-entropy) / d logits
    scale = mask / jnp.maximum(jnp.sum(mask), 1.0)
    g4 = (prob - onehot) * scale[:, None]
    g3 = mm_nt(g4, w4) * (h3 > 0).astype(jnp.float32)
    g2 = mm_nt(g3, w3) * (h2 > 0).astype(jnp.float32)
    g1 = mm_nt(g2, w2) * (h1 > 0).astype(jnp.float32)
    return (
        mm_tn(x, g1),
        jnp.sum(g1, axis=0),
        mm_tn(h1, g2),
        jnp.sum(g2, axis=0),
        mm_tn(h2, g3),
        jnp.sum(g3, axis=0),
        mm_tn(h3, g4),
        jnp.sum(g4, axis=0),
    )


def _sgd(params, mom, grads, lr, mu, wd):
    """SGD with momentum and weight decay, as throughput.sgd_step."""
    mom = tuple(
        mu * m + (g + wd * w) for m, g, w in zip(mom, grads, params, strict=True)
    )
    return tuple(w - lr * m for w, m in zip(params, mom, strict=True)), mom


def _kernel(
    n, steps, n_out, dot_dtype, carry, barrier, x_ref, y_ref, perm_ref, hp_ref, *refs
):
    """One program trains one trial through every step of every epoch.

    refs: the trial's initial (w1, b1, w2, b2, w3, b3, w4, b4), then the same as outputs,
    then (``carry="memory"``) the momentum's buffers. ``perm_ref[p]`` is the trial's
    batches' row indices, epoch after epoch (each epoch's permutation clamped and padded
    to ``steps * BATCH`` as the baseline's ``batch_at``).

    ``carry="registers"``: weights and momentum are loop carries, in registers (spilled
    to local memory where they do not fit). ``carry="memory"``: they live in the output
    buffers, loaded and stored every step; one program's ~106 kB stays in L1/L2.
    """
    ins, outs, mom_refs = refs[:8], refs[8:16], refs[16:]
    p = pl.program_id(0)
    lr, mu, wd = hp_ref[p, 0], hp_ref[p, 1], hp_ref[p, 2]
    B = tp.BATCH
    rows = jnp.arange(B)

    def batch(e, s):
        idx = perm_ref[p, pl.ds((e * steps + s) * B, B)]
        return x_ref[idx, :], y_ref[idx], (s * B + rows < n).astype(jnp.float32)

    epochs = perm_ref.shape[1] // (steps * B)
    if carry == "registers":

        def step(s, c):
            params, mom, e = c
            grads = _grads(*batch(e, s), params, n_out, dot_dtype)
            return (*_sgd(params, mom, grads, lr, mu, wd), e)

        def epoch(e, c):
            return jax.lax.fori_loop(0, steps, step, (*c, e))[:2]

        params = tuple(r[...] for r in ins)
        mom = tuple(jnp.zeros_like(a) for a in params)
        params, _ = jax.lax.fori_loop(0, epochs, epoch, (params, mom))
        for r, a in zip(outs, params, strict=True):
            r[...] = a
        return

    def store(refs, values):
        for r, a in zip(refs, values, strict=True):
            r[...] = a
        barrier()  # the next step's loads see this step's stores, whichever thread

    def step_mem(s, e):
        params = tuple(r[...] for r in outs)
        grads = _grads(*batch(e, s), params, n_out, dot_dtype)
        mom = tuple(r[...] for r in mom_refs)
        params, mom = _sgd(params, mom, grads, lr, mu, wd)
        store(outs, params)
        store(mom_refs, mom)
        return e

    def epoch_mem(e, c):
        jax.lax.fori_loop(0, steps, step_mem, e)
        return c

    store(outs, [r[...] for r in ins])
    store(mom_refs, [jnp.zeros(r.shape, r.dtype) for r in mom_refs])
    jax.lax.fori_loop(0, epochs, epoch_mem, 0)


def pad_params(params, n_out):
    """throughput.init_params' list of (w, b), the last layer padded to OUT_PAD columns."""
    flat = []
    for i, (w, b) in enumerate(params):
        if i == len(params) - 1:
            w = jnp.pad(w, ((0, 0), (0, OUT_PAD - n_out)))
            b = jnp.pad(b, (0, OUT_PAD - n_out))
        flat += [w, b]
    return flat


def unpad_params(flat, n_out):
    pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    w, b = pairs[-1]
    pairs[-1] = (w[..., :n_out], b[..., :n_out])
    return pairs


def barrier(interpret):
    """A barrier across the program's threads (Triton's); the interpreter runs a
    program as one thread and needs none."""
    if interpret:
        return lambda: None
    from jax.experimental.pallas import triton as pltriton

    return pltriton.debug_barrier


def make_fused(
    xt,
    yt,
    xv,
    yv,
    n_out,
    *,
    num_warps=4,
    dot_dtype=jnp.float32,
    carry="registers",
    interpret=False,
):
    """``train(keys, hp) -> (accuracy [P], params)``: the vmap arm's work, one kernel.
    ``dot_dtype=jnp.bfloat16`` feeds the matmuls bf16 (weights, momentum, activations'
    arithmetic and accumulation stay float32), like the engine's ``compute_dtype``.
    ``carry``: where weights and momentum live between steps (see ``_kernel``)."""
    if carry not in ("registers", "memory"):
        raise ValueError(f"carry is 'registers' or 'memory', not {carry!r}")
    n, d = xt.shape
    steps = -(-n // tp.BATCH)
    if d & (d - 1) or d < 16:
        raise ValueError(f"the kernel wants a power-of-two input width >= 16, got {d}")

    def perms(key):
        """The baseline's per-epoch shuffles, as batch_at indexes them."""
        idx = jnp.minimum(jnp.arange(steps * tp.BATCH), n - 1)
        ps = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), n))(
            jnp.arange(tp.EPOCHS)
        )
        return ps[:, idx].reshape(-1).astype(jnp.int32)

    def run(keys, hp):
        P = keys.shape[0]
        init = jax.vmap(lambda k: pad_params(tp.init_params(k, d, n_out), n_out))(keys)
        perm = jax.vmap(perms)(keys)
        hpm = jnp.stack(
            [hp["learning_rate"], hp["momentum"], hp["weight_decay"]], axis=1
        ).astype(jnp.float32)

        def spec(a):
            """Program i gets trial i's slice of a [P, ...] array."""
            zeros = (0,) * (a.ndim - 1)
            return pl.BlockSpec((None, *a.shape[1:]), lambda i: (i, *zeros))

        whole = pl.BlockSpec()  # the whole array: rows are gathered in the kernel
        kwargs = {} if interpret else {"compiler_params": _compiler_params(num_warps)}
        # carry="memory": the momentum gets buffers too (outputs, then dropped)
        outs = init * (2 if carry == "memory" else 1)
        out = pl.pallas_call(
            functools.partial(
                _kernel, n, steps, n_out, dot_dtype, carry, barrier(interpret)
            ),
            grid=(P,),
            in_specs=[whole, whole, whole, whole] + [spec(a) for a in init],
            out_specs=[spec(a) for a in outs],
            out_shape=[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in outs],
            interpret=interpret,
            **kwargs,
        )(xt, yt.astype(jnp.int32), perm, hpm, *init)
        params = unpad_params(out[: len(init)], n_out)
        acc = jax.vmap(lambda ps: jnp.mean(jnp.argmax(tp.forward(ps, xv), -1) == yv))(
            params
        )
        return acc, params

    return jax.jit(run)


def reference(xt, yt, n_out):
    """The same training by throughput.py's baseline itself (its ``sgd_step`` under
    ``lax.scan``), vmapped: the weights after the last epoch."""
    return jax.jit(jax.vmap(tp.make_train(xt, yt, xt[:1], yt[:1], n_out).train_params))


VARIANTS = {  # name -> make_fused keywords
    "w4": {"num_warps": 4},
    "w8": {"num_warps": 8},
    "w4_bf16": {"num_warps": 4, "dot_dtype": jnp.bfloat16},
    "w8_memory": {"num_warps": 8, "carry": "memory"},
}


def weight_diff(fused, ref):
    """Largest absolute difference between two trained weight lists, and the largest
    reference weight (the scale to read it against)."""
    diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), fused, ref)
    scale = jax.tree.map(lambda b: float(jnp.max(jnp.abs(b))), ref)
    return {
        "max_abs_diff": max(jax.tree.leaves(diffs)),
        "weight_scale": max(jax.tree.leaves(scale)),
    }


# Trials compared with the reference (a trial's training ignores the others' weights).
N_CHECK = 4


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--populations", type=int, nargs="*", default=[1024, 4096, 16384])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument(
        "--time-interpreted",
        action="store_true",
        help="off a GPU, run the timing path with the interpreted kernel too: it "
        "exercises the script; its times mean nothing",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    backend = jax.default_backend()
    from sklearn.datasets import load_digits

    import jaxhp

    X, y = load_digits(return_X_y=True)
    task = jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.2, seed=0)
    xt, yt, xv, yv = tp.baseline_data(task)
    n_out = task.n_out
    result = {
        **run_header("fused_mlp", model=tp.MODEL),
        "checks": {},
        "rows": [],
    }
    # The kernel is Triton's: anywhere else, Pallas's interpreter checks its arithmetic
    # on a few trials. On a GPU the first timed population's first trials are checked.
    interpret = backend != "gpu"
    ref = reference(xt, yt, n_out)
    if args.check_only or (interpret and not args.time_interpreted):
        check_keys = tp.trial_keys(N_CHECK)
        check_hp = {k: jnp.asarray(v) for k, v in tp.hparams(N_CHECK, 3).items()}
        ref_params = ref(check_keys, check_hp)
        for name in ["w4"] if interpret else args.variants:
            fn = make_fused(
                xt, yt, xv, yv, n_out, interpret=interpret, **VARIANTS[name]
            )
            try:
                out = weight_diff(fn(check_keys, check_hp)[1], ref_params)
            except Exception as e:  # noqa: BLE001 - record why a kernel variant failed
                out = {"error": f"{type(e).__name__}: {e}"[:2000]}
            result["checks"][name] = out
            print(f"check {name}: {out}", file=sys.stderr, flush=True)
        print(json.dumps(result, indent=2))
        tp.save_json(args.out, result)
        return result

    vmap_train = jax.jit(jax.vmap(tp.make_train(xt, yt, xv, yv, n_out).train))
    fused = {
        name: make_fused(xt, yt, xv, yv, n_out, interpret=interpret, **VARIANTS[name])
        for name in args.variants
    }
    flops_trial = 6.0 * (64 * 64 + 2 * 64 * 64 + 64 * 10) * xt.shape[0] * tp.EPOCHS
    for P in args.populations:
        keys = tp.trial_keys(P)
        hp = {k: jnp.asarray(v) for k, v in tp.hparams(P, P).items()}
        arms = {"vmap": lambda k=keys, h=hp: vmap_train(k, h)}
        for name, f in fused.items():
            arms[f"fused_{name}"] = lambda f=f, k=keys, h=hp: f(k, h)
        row = {"population": P}
        live = {}
        for name, fn in arms.items():
            t0 = time.perf_counter()
            try:
                out = jax.block_until_ready(fn())
            except Exception as e:  # noqa: BLE001 - record why a kernel variant failed
                row[f"{name}_error"] = f"{type(e).__name__}: {e}"[:2000]
                continue
            row[f"{name}_first_s"] = time.perf_counter() - t0
            live[name] = fn
            if name == "vmap":
                row["vmap_accuracy"] = float(jnp.mean(out))
                continue
            acc, params = out
            row[f"{name}_accuracy"] = float(jnp.mean(acc))
            variant = name.removeprefix("fused_")
            if variant not in result["checks"]:
                # its first trials' weights against the baseline's step
                sub = {k: v[:N_CHECK] for k, v in hp.items()}
                mine = [(w[:N_CHECK], b[:N_CHECK]) for w, b in params]
                check = weight_diff(mine, ref(keys[:N_CHECK], sub))
                result["checks"][variant] = {"population": P, **check}
        times = tp.best_times(list(live.values()), args.repeats)
        for name, t in zip(live, times, strict=True):
            row[name] = P / t
            row[f"{name}_tflops"] = P / t * flops_trial / 1e12
            if name != "vmap" and "vmap" in live:
                row[f"{name}_vs_vmap"] = row[name] / row["vmap"]
        result["rows"].append(row)
        tp.save_json(args.out, {**result, "partial": True})
        print(f"P={P}: {row}", file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))
    tp.save_json(args.out, result)
    names = ["vmap"] + [f"fused_{n}" for n in fused]
    print(f"\n{'P':>7} " + " ".join(f"{a:>20}" for a in names))
    for row in result["rows"]:
        cells = [f"{row.get('vmap', float('nan')):20.0f}"]
        for a in names[1:]:
            ratio = row.get(f"{a}_vs_vmap", float("nan"))
            cells.append(f"{row.get(a, float('nan')):11.0f} ({ratio:.2f}x)")
        print(f"{row['population']:>7} " + " ".join(cells))
    return result


if __name__ == "__main__":
    main()
