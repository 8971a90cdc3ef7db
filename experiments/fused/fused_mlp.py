"""Experiment: a whole training fused into one Pallas (Triton) kernel, weights on chip.

Issue 6 asks whether keeping each trial's small weights on chip across steps pays on a
GPU. The plain ``jit(vmap(train))`` of throughput.py's reference MLP (64-64-64-10 on
digits, batch 64, SGD with momentum and weight decay, 10 epochs) is bound by memory: every
step reads and writes every trial's weights, momentum and gradients in HBM, a dozen passes
over ~53 kB per trial. Here one kernel program trains one trial for all its epochs
(forward, backward and update written out by hand, the batch gathered by the trial's own
permutation inside the kernel, each layer updated as soon as its gradient is known). The
only HBM traffic per step is the batch (16 kB) and, where weights or momentum live in
memory, one program's ~53-106 kB, meant to stay in L1/L2. The ``per_step`` variants
instead train one step per call and keep the state in HBM between calls.

Arms, side by side in one run, the same trials (keys, hyperparameters, data order) as
throughput.py's ``vmap`` arm (validation after the last epoch):

  vmap                  throughput.py's plain ``jit(vmap(train))``
  fused_w4, _w8         4 or 8 warps per program, weights and momentum in registers
                        (~27k float32 a trial: they spill)
  fused_w4_bf16         4 warps, the matmuls fed bf16 (float32 weights, accumulation)
  fused_w8_split(_bf16) weights in registers, momentum in the kernel's output buffers
  fused_w8_memory(_bf16) both in the output buffers, each loaded where it is used
  fused_w8_stash_bf16   as memory, and the activations for the backward pass too
  fused_w*_per_step_bf16 one kernel call a step (an XLA loop around it), weights and
                        momentum read from HBM and written back each step: the
                        form the engine could call from its own step loop

Also checks, before timing, that the kernel's trained weights equal the baseline's step
applied by ``lax.scan`` (same batches) within float tolerance (TF32 matmuls on a GPU).

The kernel is Triton-only (NVIDIA GPUs). On a CPU the script runs the check in Pallas's
interpreter (the kernel's arithmetic, not its speed) and skips the timing:

    python experiments/fused/fused_mlp.py                     # CPU: interpreter check
    python experiments/fused/fused_mlp.py --populations 1024 4096 16384   # GPU
    python experiments/fused/fused_mlp.py --time-interpreted --populations 4  # CPU: the
                                     # GPU path end to end, interpreted (slow, no speed)
    python experiments/fused/fused_mlp.py --resources h200    # no GPU, JAX's CUDA plugin
                                     # installed: each kernel's registers and spills

``--resources`` compiles every variant for the GPU without one (as
benchmarks/investigations/hlo_diff.py --target), takes the Triton kernel's PTX from XLA's dump, and has ptxas report registers
and spill bytes and the SASS its static instruction mix; the engine's own per-step
kernel (``fused_step.py``) too, as ``engine_step(_bf16)``, and
with dropout (its masks drawn in the kernel) as ``engine_step_dropout_bf16``, with the
four activations mixed as ``engine_step_activations_bf16``, and with Adam, AdamW and
SGD mixed as ``engine_step_optimizers_bf16``.

The whole-training kernels are not wired into the engine: an epoch's validation, its
stoppers and its bookkeeping sit between the engine's epochs. The per-step form is: the
fused step of ``fused_step.py`` is a general version of it (masked
depths, padded tiles, regressors, frozen members), timed by throughput_fused.py. These
variants measure how far keeping the weights on chip across steps would go further
(benchmarks/gpu_check.sh runs them).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.join(HERE, "..", "..", "benchmarks")
sys.path.insert(0, os.path.join(BENCHMARKS, "investigations"))  # hlo_diff
sys.path.insert(0, BENCHMARKS)  # throughput, runinfo
sys.path.insert(0, HERE)

import throughput as tp  # noqa: E402

# The per-step fused kernel (fused_step.py) shares these with the kernels here.
from fused_step import _barrier, _compiler_params, _dot  # noqa: E402
from runinfo import run_header  # noqa: E402

OUT_PAD = 16  # the 10 classes padded to a tensor-core tile


def _step(x, y, mask, weight, n_out, dot_dtype, update, stash=None):
    """One step of the masked mean cross-entropy's SGD, written out.

    ``weight(i)`` gives parameter ``i`` of (w1, b1, ..., w4, b4) where it is used (a
    value, or a load from memory). The backward pass updates each layer as soon as its
    gradient is known, after taking the layer's input gradient from its old weights:
    ``update(layer, (w, b), (gw, gb))`` returns the layer's new (w, b), and the
    gradients die there. Only one layer's gradient is alive at a time, which keeps a
    program's live values, and so its registers, small. ``stash`` (a ``Stash``) keeps
    the activations for the backward pass in memory instead of as values. Returns the
    new parameters."""
    stash = stash or _Held()

    def mm(a, b):
        return _dot(a, b, (1, 0), dot_dtype)

    def mm_nt(a, b):  # a @ b.T
        return _dot(a, b, (1, 1), dot_dtype)

    def mm_tn(a, b):  # a.T @ b
        return _dot(a, b, (0, 0), dot_dtype)

    cols = jnp.arange(OUT_PAD)
    a, acts = x, [stash.keep(0, x)]
    for layer in range(3):
        h = mm(a, weight(2 * layer)) + weight(2 * layer + 1)[None, :]
        a = jnp.maximum(h, 0.0)
        acts.append(stash.keep(layer + 1, a))
    logits = mm(a, weight(6)) + weight(7)[None, :]
    logits = jnp.where(cols[None, :] < n_out, logits, -jnp.inf)
    z = logits - jnp.max(logits, axis=1)[:, None]
    ez = jnp.exp(z)
    prob = ez / jnp.sum(ez, axis=1)[:, None]
    onehot = (y[:, None] == cols[None, :]).astype(jnp.float32)
    # d(mean masked cross-entropy) / d logits
    scale = mask / jnp.maximum(jnp.sum(mask), 1.0)
    g = (prob - onehot) * scale[:, None]
    new = [None] * 8
    stash.sync()
    for layer in (3, 2, 1, 0):  # g: the gradient at this layer's output
        w, h = weight(2 * layer), stash.recall(layer, acts[layer])
        g_in = mm_nt(g, w) * (h > 0).astype(jnp.float32) if layer else None
        grads = (mm_tn(h, g), jnp.sum(g, axis=0))
        new[2 * layer : 2 * layer + 2] = update(
            layer, (w, weight(2 * layer + 1)), grads
        )
        g = g_in
    return tuple(new)


class _Held:
    """The forward pass's activations held as values (registers) for the backward."""

    def keep(self, i, a):
        return a

    def sync(self):
        pass

    def recall(self, i, held):
        return held


class Stash(_Held):
    """The activations stored in the program's buffers (L1/L2), in the matmuls' input
    type (a matmul input or a sign is all the backward pass takes of them), and read
    back by the backward pass: ``x_ref`` [B, d] the input, ``h_ref`` [3, B, width]
    the hidden layers'. A barrier between the stores and the loads."""

    def __init__(self, x_ref, h_ref, barrier):
        self.x_ref, self.h_ref, self.barrier = x_ref, h_ref, barrier

    def _at(self, i):
        return (self.x_ref, (...,)) if i == 0 else (self.h_ref, (i - 1,))

    def keep(self, i, a):
        ref, at = self._at(i)
        ref[at] = a.astype(ref.dtype)

    def sync(self):
        self.barrier()

    def recall(self, i, held):
        ref, at = self._at(i)
        return ref[at]


def _sgd(w, m, g, lr, mu, wd):
    """SGD with momentum and weight decay, as throughput.sgd_step: (new w, new m)."""
    m = mu * m + (g + wd * w)
    return w - lr * m, m


def _kernel(
    n,
    steps,
    n_out,
    dot_dtype,
    carry,
    barrier,
    x_ref,
    y_ref,
    perm_ref,
    hp_ref,
    *refs,
):
    """One program trains one trial through every step of every epoch ("per_step":
    through one step).

    refs: ("per_step") the step's index, then the trial's initial (w1, b1, w2, b2, w3,
    b3, w4, b4) ("per_step": its current ones, and its momentum), then the same as
    outputs, then (``carry`` other than "registers") the momentum's buffers, then
    ("stash") the activations' (input, hidden layers). ``perm_ref[p]`` is the trial's
    batches' row indices, epoch after epoch (each epoch's permutation clamped and
    padded to ``steps * BATCH`` as the baseline's ``batch_at``).

    Where weights and momentum live between steps (``carry``):
    - "registers": both are loop carries, in registers (spilled to local memory where
      they do not fit);
    - "split": the weights are loop carries; the momentum lives in its output buffers,
      read and written once a step by the layer's update (L1/L2, ~53 kB a program);
    - "memory": both live in the output buffers, each weight loaded where it is used;
    - "stash": as "memory", and the forward pass's activations too (``Stash``);
    - "per_step": no loop here: one call of the kernel is one step of every trial,
      weights and momentum read from memory and written back (the same buffers:
      the call aliases them), and an XLA loop makes the calls. With no loop in the
      kernel, no address is held across steps.
    Barriers, where values live in memory: before a layer's stores (every thread has
    read the old values), and at the end of a step (the next step's first layer
    reads what this step's last update wrote). The momentum needs no more: between
    a layer's update and its next one lie the other layers' barriers.
    """
    if carry == "per_step":  # the step's index, then the momentum in, before the outs
        t_ref, refs = refs[0], refs[1:]
        mom_ins, refs = refs[8:16], refs[:8] + refs[16:]
    ins, outs, mom_refs = refs[:8], refs[8:16], refs[16:24]
    stash = Stash(*refs[24:26], barrier) if carry == "stash" else None
    p = pl.program_id(0)
    lr, mu, wd = hp_ref[p, 0], hp_ref[p, 1], hp_ref[p, 2]
    B = tp.BATCH
    rows = jnp.arange(B)

    def batch(e, s):
        idx = perm_ref[p, pl.ds((e * steps + s) * B, B)]
        return x_ref[idx, :], y_ref[idx], (s * B + rows < n).astype(jnp.float32)

    def update_from(moms, store):
        """``update`` for ``_step``, and the list it writes the new momenta to.
        ``moms(i)`` gives parameter i's momentum; ``store(i, w, m)``, where given,
        keeps the new values in memory."""

        def update(layer, ws, gs):
            i = 2 * layer
            ms = (moms(i), moms(i + 1))
            if store is not None:
                barrier()  # WAR: all threads' loads of this layer before any store
            new = [
                _sgd(w, m, g, lr, mu, wd) for w, m, g in zip(ws, ms, gs, strict=True)
            ]
            for j, (w, m) in enumerate(new):
                if store is not None:
                    store(i + j, w, m)
                new_moms[i + j] = m
            return [w for w, _ in new]

        new_moms = [None] * 8
        return update, new_moms

    if carry == "per_step":
        t = t_ref[0]

        def put(i, w, m):
            outs[i][...] = w
            mom_refs[i][...] = m

        update, _ = update_from(lambda i: mom_ins[i][...], put)
        batch_t = batch(t // steps, t % steps)
        _step(*batch_t, lambda i: ins[i][...], n_out, dot_dtype, update)
        return

    epochs = perm_ref.shape[1] // (steps * B)
    in_memory = carry in ("memory", "stash")
    if carry == "registers":

        def step(s, c):
            params, mom, e = c
            update, new_mom = update_from(lambda i: mom[i], None)
            params = _step(*batch(e, s), lambda i: params[i], n_out, dot_dtype, update)
            return params, tuple(new_mom), e

        mom = tuple(jnp.zeros(r.shape, r.dtype) for r in ins)
    else:

        def store(i, w, m):
            if in_memory:
                outs[i][...] = w
            mom_refs[i][...] = m

        def step(s, c):
            params, e = c
            update, _ = update_from(lambda i: mom_refs[i][...], store)
            weight = (lambda i: outs[i][...]) if in_memory else (lambda i: params[i])
            new = _step(*batch(e, s), weight, n_out, dot_dtype, update, stash)
            if in_memory:
                barrier()  # RAW: the first layer's new weights, for the next step
            return (params if in_memory else new), e

        for r in mom_refs:
            r[...] = jnp.zeros(r.shape, r.dtype)
        if in_memory:
            for r, r_in in zip(outs, ins, strict=True):
                r[...] = r_in[...]
        barrier()
        mom = None

    def epoch(e, c):
        return jax.lax.fori_loop(0, steps, step, (*c, e))[:-1]

    params = tuple(r[...] for r in ins) if not in_memory else ()
    carried = (params, mom) if mom is not None else (params,)
    params = jax.lax.fori_loop(0, epochs, epoch, carried)[0]
    if not in_memory:
        for r, a in zip(outs, params, strict=True):
            r[...] = a


CARRIES = ("registers", "split", "memory", "stash", "per_step")


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
    if carry not in CARRIES:
        raise ValueError(f"carry is one of {CARRIES}, not {carry!r}")
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
        kernel = functools.partial(
            _kernel, n, steps, n_out, dot_dtype, carry, _barrier(interpret)
        )

        def call(n_whole, per_trial, outs, **extra):
            """The kernel over the population: ``n_whole`` whole arrays, then the
            ``per_trial`` arrays' and ``outs``' slices, program by program."""
            return pl.pallas_call(
                kernel,
                grid=(P,),
                in_specs=[whole] * n_whole + [spec(a) for a in per_trial],
                out_specs=[spec(a) for a in outs],
                out_shape=[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in outs],
                interpret=interpret,
                **kwargs,
                **extra,
            )

        yt32 = yt.astype(jnp.int32)
        if carry == "per_step":
            state = init + [jnp.zeros_like(a) for a in init]  # parameters, momentum
            aliases = {5 + i: i for i in range(len(state))}  # in place, step by step
            step_call = call(5, state, state, input_output_aliases=aliases)

            def one_step(t, state):
                t = jnp.reshape(t, (1,)).astype(jnp.int32)
                return tuple(step_call(xt, yt32, perm, hpm, t, *state))

            total = perm.shape[1] // tp.BATCH
            out = jax.lax.fori_loop(0, total, one_step, tuple(state))
        else:
            # momentum in memory: it gets buffers too (outputs, then dropped)
            outs = init * (1 if carry == "registers" else 2)
            if carry == "stash":  # the activations' buffers (outputs, then dropped)
                width = init[0].shape[-1]
                outs += [
                    jax.ShapeDtypeStruct((P, tp.BATCH, d), dot_dtype),
                    jax.ShapeDtypeStruct((P, 3, tp.BATCH, width), dot_dtype),
                ]
            out = call(4, init, outs)(xt, yt32, perm, hpm, *init)
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
    # Added without a GPU (2026-11-29): fewest spills by `--resources h200`.
    "w8_split": {"num_warps": 8, "carry": "split"},
    "w8_split_bf16": {"num_warps": 8, "carry": "split", "dot_dtype": jnp.bfloat16},
    "w8_memory_bf16": {"num_warps": 8, "carry": "memory", "dot_dtype": jnp.bfloat16},
    "w8_stash_bf16": {"num_warps": 8, "carry": "stash", "dot_dtype": jnp.bfloat16},
    "w4_per_step_bf16": {
        "num_warps": 4,
        "carry": "per_step",
        "dot_dtype": jnp.bfloat16,
    },
    "w8_per_step_bf16": {
        "num_warps": 8,
        "carry": "per_step",
        "dot_dtype": jnp.bfloat16,
    },
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


# --- Without a GPU: the kernels' registers and spills, from the GPU's own compile ---

_PTXAS_USED = re.compile(r"Used (\d+) registers")
_PTXAS_SPILL = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_SASS_OP = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")
# The static instruction mix worth reading: tensor-core matmuls, register spills
# (local memory), shared and global memory, barriers, shuffles.
SASS_OPS = ("HGMMA", "HMMA", "LDL", "STL", "LDS", "STS", "LDG", "STG", "BAR", "SHFL")
REGISTERS_PER_SM = 65536


def parse_ptxas(text):
    """ptxas -v's report of one kernel: registers a thread, stack and spill bytes."""
    used, spill = _PTXAS_USED.search(text), _PTXAS_SPILL.search(text)
    if used is None or spill is None:
        raise ValueError(f"no ptxas resource report in: {text[:500]!r}")
    stack, stores, loads = (int(v) for v in spill.groups())
    return {
        "registers": int(used.group(1)),
        "stack_bytes": stack,
        "spill_store_bytes": stores,
        "spill_load_bytes": loads,
    }


def sass_mix(text):
    """Static instruction counts of a cuobjdump -sass listing: the total and SASS_OPS."""
    ops = [m.group(1) for m in _SASS_OP.finditer(text)]
    return {"instructions": len(ops), **{k: ops.count(k) for k in SASS_OPS}}


def programs_per_sm(registers, num_warps):
    """Programs an SM holds at once, by registers alone (allocated per warp in units
    of 256, so a thread's count rounds up to a multiple of 8)."""
    per_warp = -(-registers // 8) * 8 * 32
    return REGISTERS_PER_SM // (per_warp * num_warps)


def _cuda_tool(name):
    """A CUDA binary from NVIDIA's pip wheels, else from PATH. The wheels' come first:
    jax[cuda*] installs the ptxas whose version XLA compiles with, and ptxas
    versions spill differently (nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm give
    the SASS)."""
    import glob
    import shutil

    try:
        import nvidia

        roots = list(nvidia.__path__)
    except ImportError:
        roots = []
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "*", "bin", name))):
            return path
    return shutil.which(name)


def _read(path):
    with open(path) as f:
        return f.read()


def engine_step_compile(
    sharding,
    population,
    compute_dtype,
    dropout=False,
    activations=False,
    optimizers=False,
):
    """A thunk compiling the engine's fused step (``fused_step.py``, as
    ``fused_task.FusedMLPClassifier`` trains with it) for the reference MLP: one step of ``population`` trials, the
    bucket's trainable made by the reference task as the engine makes it (``dropout``:
    with dropout 0.1, whose masks the kernel draws; ``activations``: ReLU, tanh, GELU
    and SiLU, a quarter of the trials each; ``optimizers``: Adam, AdamW and SGD, a
    third each)."""
    import fused_step
    import hlo_diff
    from fused_task import FusedMLPClassifier

    import jaxhp
    from jaxhp.trainable import Batch

    P = population
    task, space, _ = tp.reference_task(FusedMLPClassifier, compute_dtype=compute_dtype)
    values = tp.hparams(P, P)
    extra = {}
    if dropout:
        extra["dropout"] = jaxhp.Float(0.0, 0.5)
        values["dropout"] = np.full(P, 0.1, np.float32)
    if activations:
        extra["activation"] = jaxhp.Choice(["relu", "tanh", "gelu", "silu"])
        values["activation"] = np.arange(P) % 4
    if optimizers:
        extra["optimizer"] = jaxhp.Choice(["adam", "adamw", "sgd"])
        values["optimizer"] = np.arange(P) % 3
    space = jaxhp.Space(**{**dict(space.items()), **extra})
    hp = task.hparams(space, values)
    tr = task.trainable(hp)
    state = jax.eval_shape(
        jax.vmap(tr.init), jax.random.split(jax.random.key(0), P), hp
    )
    batch = Batch(
        jax.ShapeDtypeStruct((P, tp.BATCH, tr.n_in), jnp.float32),
        jax.ShapeDtypeStruct((P, tp.BATCH), jnp.int32),
        jax.ShapeDtypeStruct((P, tp.BATCH), jnp.bool_),
        jax.eval_shape(lambda: jax.random.split(jax.random.key(0), P)),
        None,
        jax.ShapeDtypeStruct((P,), jnp.int32),
    )
    keep = jax.ShapeDtypeStruct((P,), jnp.bool_)
    args = hlo_diff.shapes_on(sharding, (state, batch, hp, keep))

    def step(s, b, h, k):
        step_args, run = tr.population_step(h, k, platform="gpu")
        return run(*step_args, s, b)

    step = jax.jit(step)
    return fused_step.NUM_WARPS, lambda: step.lower(*args).compile()


ENGINE_STEPS = {  # name: engine_step_compile's arguments (the reference MLP's: SGD)
    "engine_step": {"compute_dtype": "float32"},
    "engine_step_bf16": {"compute_dtype": "bfloat16"},
    "engine_step_dropout_bf16": {"compute_dtype": "bfloat16", "dropout": True},
    "engine_step_activations_bf16": {"compute_dtype": "bfloat16", "activations": True},
    "engine_step_optimizers_bf16": {"compute_dtype": "bfloat16", "optimizers": True},
}


def kernel_resources(variants, sharding, population, dump, data, arch="sm_90a"):
    """Compiles each variant for the GPU of ``sharding`` (``hlo_diff.target_sharding``:
    JAX's CUDA plugin against a description of the device, no GPU) and reads its Triton
    kernel's PTX from XLA's dump folder ``dump`` (``--xla_dump_to``, set before the
    backend starts). ptxas then reports registers and spills, and the SASS gives the
    static instruction mix. H100 and H200 are both ``sm_90a``. Besides VARIANTS,
    ``variants`` may name ENGINE_STEPS: the engine's own fused step (one step of the
    population; the kernel the engine calls from its step loop)."""
    import glob
    import subprocess

    import hlo_diff

    ptxas, cuobjdump = _cuda_tool("ptxas"), _cuda_tool("cuobjdump")
    if ptxas is None:
        raise RuntimeError("no ptxas: install JAX's CUDA plugin, e.g. jax[cuda13]")
    version = subprocess.run([ptxas, "--version"], capture_output=True, text=True)
    out = {"ptxas": version.stdout.strip().splitlines()[-1], "variants": {}}
    env = dict(os.environ)
    if cuobjdump:  # cuobjdump -sass runs nvdisasm, found beside it or on PATH
        env["PATH"] = os.path.dirname(cuobjdump) + os.pathsep + env.get("PATH", "")
    keys = tp.trial_keys(population)
    hp = {k: jnp.asarray(v) for k, v in tp.hparams(population, population).items()}
    args = hlo_diff.shapes_on(sharding, (keys, hp))
    seen = set()
    for name in variants:
        row = {}
        try:
            if name in ENGINE_STEPS:
                warps, build = engine_step_compile(
                    sharding, population, **ENGINE_STEPS[name]
                )
            else:
                kw = VARIANTS[name]
                train = make_fused(*data, **kw)
                warps = kw.get("num_warps", 4)

                def build(train=train):
                    return train.lower(*args).compile()

            row["num_warps"] = warps
            build()
            new = sorted(set(glob.glob(os.path.join(dump, "*.ptx"))) - seen)
            seen.update(new)
            ptx = [f for f in new if ".entry _kernel(" in _read(f)]
            if len(ptx) != 1:
                raise RuntimeError(f"expected one kernel's PTX in the dump, got {ptx}")
            with tempfile.TemporaryDirectory() as tmp:
                cubin = os.path.join(tmp, "kernel.cubin")
                report = subprocess.run(
                    [ptxas, f"-arch={arch}", "-O3", "-v", ptx[0], "-o", cubin],
                    capture_output=True,
                    text=True,
                )
                if report.returncode:
                    raise RuntimeError(f"ptxas failed: {report.stderr[-1500:]}")
                row.update(parse_ptxas(report.stderr))
                if cuobjdump:
                    sass = subprocess.run(
                        [cuobjdump, "-sass", cubin],
                        capture_output=True,
                        text=True,
                        env=env,
                    )
                    if sass.returncode == 0:
                        row["sass"] = sass_mix(sass.stdout)
            row["programs_per_sm"] = programs_per_sm(row["registers"], row["num_warps"])
        except Exception as e:  # noqa: BLE001 - record why a variant failed
            row["error"] = f"{type(e).__name__}: {e}"[:2000]
        out["variants"][name] = row
        print(f"{name}: {row}", file=sys.stderr, flush=True)
    return out


def print_resources(variants):
    """kernel_resources' rows as a table."""
    print(
        f"\n{'variant':>17} {'regs':>5} {'spill st/ld B':>14} {'per SM':>6} "
        f"{'SASS':>6} {'LDL+STL':>8} {'HGMMA':>6}"
    )
    for name, r in variants.items():
        if "error" in r:
            print(f"{name:>17} error: {r['error'][:100]}")
            continue
        m = r.get("sass", {})
        spill = f"{r['spill_store_bytes']}/{r['spill_load_bytes']}"
        print(
            f"{name:>17} {r['registers']:>5} {spill:>14} {r['programs_per_sm']:>6} "
            f"{m.get('instructions', '-'):>6} {m.get('LDL', 0) + m.get('STL', 0):>8} "
            f"{m.get('HGMMA', '-'):>6}"
        )


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
    ap.add_argument(
        "--resources",
        choices=["h100", "h200"],
        help="no GPU needed: compile every variant for this GPU (JAX's CUDA plugin, "
        "e.g. jax[cuda13], installed) and report ptxas's registers and spills and "
        "the SASS instruction mix, instead of training",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.resources:
        # XLA reads its flags when the backend starts: before anything touches it.
        dump = tempfile.mkdtemp(prefix="fused_mlp_dump_")
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump}"
        ).strip()
        import hlo_diff

        sharding = hlo_diff.target_sharding(args.resources)  # before any backend
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
    if args.resources:
        data = (xt, yt, xv, yv, n_out)
        P = args.populations[0]
        result["target"] = args.resources
        result["population"] = P
        names = [*args.variants, *ENGINE_STEPS]
        result.update(kernel_resources(names, sharding, P, dump, data))
        shutil.rmtree(dump, ignore_errors=True)
        print(json.dumps(result, indent=2))
        tp.save_json(args.out, result)
        print_resources(result["variants"])
        return result
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
            # a step cut short by a time cap (gpu_check.sh) keeps what ran so far
            rows = [*result["rows"], row]
            tp.save_json(args.out, {**result, "rows": rows, "partial": True})
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
