"""The built-in MLP's training step as one Pallas kernel for the whole population.

An experiment, outside the package (experiments/fused/README.md): ``fused_task.py``'s
``FusedMLPClassifier`` (and regressor) trains with this step instead of ``jax.vmap`` of
``MLPTrainable.step``, through the Trainable's ``population_step`` extension point.
Under the vmap XLA runs a step as a few dozen kernels, each reading and writing every
trial's weights, momentum or gradients in device memory. Here one program trains one
member (trial × fold) through one step: it loads its batch, weights and optimizer state
once, runs the forward pass, the backward pass and the optimizer's update with
everything on chip, and writes the new weights and state back in place (the call
aliases them). A layer is updated as soon as its gradient is known, so one layer's
gradient is alive at a time.

It computes what ``MLPTrainable.step`` computes: the same masked depth (a layer past a
trial's ``n_layers`` is an identity), padded units, per-row loss terms, ``jaxhp.optim``'s
Adam, AdamW and SGD with momentum (mixed per trial, weight decay included, Adam's step
count kept for the members that train), every activation (ReLU, tanh, GELU, SiLU, mixed
per trial, each with the derivative JAX's autodiff takes), dropout (the kernel draws the
vmapped step's masks from the step key's two words with ``jaxhp.bits``' integer hash, so
they are the same unit for unit), and ``bfloat16`` matmul inputs under
``compute_dtype="bfloat16"`` (where it keeps the activations in float32: a little more
precise than the vmapped step, which rounds them to bfloat16). A member whose ``keep``
flag is off, or whose batch is empty (a trial with fewer steps an epoch than its bucket),
is left bit for bit as it was.

What it runs: tiles of at most 128 units, 256 inputs and 256 rows a batch (``check``).
It is written for Triton (NVIDIA GPUs), a Pallas backend that JAX deprecates
(``_pltriton``). Other backends run it in Pallas's interpreter: the same arithmetic,
slowly (the tests use it). ``throughput_fused.py`` times it against the vmapped step,
and ``fused_step_check.py`` checks on a GPU that the Triton kernel trains what the
vmapped step trains.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from jaxhp import bits
from jaxhp.optim import ADAM, ADAMW, B1, B2, EPS, SGD, lr_scale
from jaxhp.tasks.mlp import MLPState

__all__ = ["check", "population_step"]

#: Warps per program. With 8 the reference MLP's step spills 484 bytes a thread in
#: float32 and 16 in bf16, against 692 and 224 with 4 (benchmarks/fused_mlp.py
#: --resources h200: the H200's compile, read without a device).
NUM_WARPS = 8
# Tiles beyond these would leave a program's working set far past its registers.
MAX_WIDTH, MAX_INPUTS, MAX_BATCH, MAX_OUTPUTS = 128, 256, 256, 128
# Triton's matmuls want every tile dimension a power of two, at least 16.
MIN_TILE = 16


def _tile(n: int) -> int:
    return max(MIN_TILE, 1 << (int(n) - 1).bit_length())


def check(
    *,
    activations: list,
    max_width: int,
    max_batch: int,
    n_in: int,
    n_out: int,
) -> None:
    """Raise ``ValueError`` naming what the fused step cannot train (before compiling)."""

    def bad(what):
        raise ValueError(f"the fused step {what}")

    if set(activations) - set(ACTIVATIONS):
        bad(
            f"has activations {list(ACTIVATIONS)}; the space allows activation "
            f"{sorted(activations)}"
        )
    if max_width > MAX_WIDTH:
        bad(f"takes width at most {MAX_WIDTH}; the space allows {max_width}")
    if max_batch > MAX_BATCH:
        bad(f"takes batch_size at most {MAX_BATCH}; the space allows {max_batch}")
    if n_in > MAX_INPUTS:
        bad(f"takes at most {MAX_INPUTS} input features; the data has {n_in}")
    if n_out > MAX_OUTPUTS:
        bad(f"takes at most {MAX_OUTPUTS} outputs; the task has {n_out}")


#: The activations the kernel computes, with their derivatives, by the codes of
#: ``jaxhp.tasks.mlp.ACTIVATIONS`` (the same order: a test holds them equal).
ACTIVATIONS = ("relu", "tanh", "gelu", "silu")
_GELU_C = float(np.float32(np.sqrt(2 / np.pi)))  # jax.nn.gelu's, in float32


def _activation(name: str, z):
    """Activation ``name`` of ``z`` and its derivative: ``jax.nn``'s function (``gelu``
    its tanh approximation, its default) and what JAX's autodiff takes from it."""
    if name == "relu":
        return jnp.maximum(z, 0.0), (z > 0).astype(jnp.float32)
    if name == "tanh":
        t = jnp.tanh(z)
        return t, (1.0 + t) * (1.0 - t)
    if name == "gelu":
        t = jnp.tanh(_GELU_C * (z + 0.044715 * (z * z * z)))
        cdf = 0.5 * (1.0 + t)
        inner = _GELU_C * (1.0 + 3.0 * 0.044715 * (z * z))
        return z * cdf, cdf + z * (0.5 * (1.0 + t) * (1.0 - t)) * inner
    if name == "silu":
        s = 1.0 / (1.0 + jnp.exp(-z))
        return z * s, s * (1.0 + z * (1.0 - s))
    raise ValueError(f"no activation {name!r} in the fused kernel")


def _activate(z, position, names: tuple[str, ...]):
    """The trial's activation, ``names[position]`` (the bucket's activations), and its
    derivative. A program trains one trial, so ``position`` is one scalar: a switch
    runs that activation's branch alone. (Selecting among all four, as the vmapped
    step does, took 16,120 instructions a thread for the reference MLP in bf16,
    against 3,264 for ReLU alone: fused_mlp.py --resources h200.)"""
    if len(names) == 1:
        return _activation(names[0], z)
    branches = [functools.partial(_activation, n) for n in names]
    return jax.lax.switch(position.astype(jnp.int32), branches, z)


def _dot(a, b, contract, dtype):
    """A matmul contracting ``contract`` = (a's dim, b's dim), its inputs in ``dtype``
    (float32: the backend's default precision, TF32 on a GPU, as XLA's), float32 out."""
    bf16 = jnp.dtype(dtype) == jnp.bfloat16
    return jax.lax.dot_general(
        a.astype(dtype),
        b.astype(dtype),
        (((contract[0],), (contract[1],)), ((), ())),
        # bf16 inputs name their algorithm: Pallas's Triton lowering would otherwise
        # tag the dot TF32, which is meant for float32 inputs.
        precision=jax.lax.DotAlgorithmPreset.BF16_BF16_F32 if bf16 else None,
        preferred_element_type=jnp.float32,
    )


def _inside(shape: tuple[int, ...], real: tuple[int, ...]):
    """Where a tile of ``shape`` lies inside the array's ``real`` extent (None: all of
    it). Pallas's Triton lowering addresses a padded tile with the array's own strides
    and masks nothing: unmasked, a padded tile's extra columns are the next row's
    elements, and storing them would overwrite those."""
    inside = None
    for axis, n in enumerate(real):
        if shape[axis] != n:
            m = jax.lax.broadcasted_iota(jnp.int32, shape, axis) < n
            inside = m if inside is None else inside & m
    return inside


@functools.cache
def _pltriton():
    """Pallas's Triton backend (``jax.experimental.pallas.triton``), or None where this
    JAX has none. JAX 0.11 deprecated it, and a later release will drop it, so it is
    imported here, when a fused step is built, not when jaxhp is: without it the
    library still imports, Pallas's interpreter still runs the kernel (the CPU tests),
    and only a GPU's fused step fails, saying why (``population_step``)."""
    try:
        from jax.experimental.pallas import triton  # noqa: PLC0415
    except ImportError:
        return None
    return triton


def _load(ref, real: tuple[int, ...]):
    """A tile's values, zero outside the array's ``real`` extent."""
    inside = _inside(ref.shape, real)
    if inside is None:
        return ref[...]
    if (triton := _pltriton()) is None:  # the interpreter pads; select the inside
        return jnp.where(inside, ref[...], jnp.zeros((), ref.dtype))
    return triton.load(ref, mask=inside, other=jnp.zeros((), ref.dtype))


def _store(ref, value, real: tuple[int, ...]):
    """Store a tile, leaving what lies outside the array's ``real`` extent alone."""
    inside = _inside(ref.shape, real)
    value = value.astype(ref.dtype)
    if inside is None:
        ref[...] = value
    elif (triton := _pltriton()) is None:  # the interpreter drops the padding
        ref[...] = jnp.where(inside, value, ref[...])
    else:
        triton.store(ref, value, mask=inside)


def _kernel(cfg, *refs):
    (
        depth,
        min_depth,
        n_in,
        n_out,
        width,
        batch,
        classifier,
        dot_dtype,
        kinds,
        dropout,
        activations,
        barrier,
    ) = cfg
    n_leaves = 2 * (depth + 1)
    has_adam = ADAM in kinds or ADAMW in kinds
    n_state = (3 if has_adam else 2) * n_leaves  # params, mu (and nu)
    hp_ref, step_ref, *refs = refs
    key_ref = refs.pop(0) if dropout else None  # the step key's two words
    x_ref, y_ref, *refs = refs
    state_in, state_out, (loss_ref,) = refs[:n_state], refs[n_state:-1], refs[-1:]

    def split(rs):  # params, mu, nu (empty without Adam): n_leaves refs each
        return [rs[k * n_leaves : (k + 1) * n_leaves] for k in range(3)]

    p_in, mu_in, nu_in = split(state_in)
    p_out, mu_out, nu_out = split(state_out)
    fans = [n_in] + [width] * depth  # the rows of each layer's kernel
    units = [width] * depth + [n_out]  # its columns

    def real(i):  # leaf i's extent: kernel [fan, units] or bias [units]
        layer = i // 2
        return (fans[layer], units[layer]) if i % 2 == 0 else (units[layer],)

    def weight(i):  # cast to the compute dtype by the matmul (_dot), in registers
        return _load(p_in[i], real(i))

    lr, mom, wd = hp_ref[0], hp_ref[1], hp_ref[2]
    n_layers, keep, code, keep_rate = hp_ref[3], hp_ref[4], hp_ref[5], hp_ref[6]
    act = hp_ref[7]  # the trial's activation: its position in `activations`
    # The batch's real rows (its first `count`), and Adam's bias corrections.
    count = step_ref[0].astype(jnp.int32)
    bc1, bc2 = step_ref[1], step_ref[2]
    # The trial's optimizer by its position among the bucket's (`kinds`, sorted).
    kind_at = jnp.int32(0)
    for position, kind in enumerate(kinds[1:], 1):
        kind_at = jnp.where(code == kind, position, kind_at)

    def skip():  # a frozen member: its state stays as it is (aliased), no loss
        _store(loss_ref, jnp.zeros(loss_ref.shape, loss_ref.dtype), (batch,))

    def train():
        rows = jax.lax.broadcasted_iota(jnp.int32, (x_ref.shape[0],), 0)
        rowmask = (rows < count).astype(jnp.float32)  # [Bp]: 1 on the real rows
        x = _load(x_ref, (batch, n_in))
        n_real = count.astype(jnp.float32)
        scale = rowmask / n_real  # d(the loss terms' sum) / d(a row's loss)

        # Forward. hs[l] is layer l's input; masks[l] the derivative of its
        # activation and its dropout (where a ReLU alone: where they pass the
        # gradient); used[l] whether the trial has layer l (a layer past n_layers
        # passes its input on).
        h, hs, masks, used = x, [], [], []
        for layer in range(depth):
            hs.append(h)
            z = _dot(h, weight(2 * layer), (1, 0), dot_dtype) + weight(2 * layer + 1)
            if activations == ("relu",):
                a, slope = jnp.maximum(z, 0.0), z > 0
            else:  # the trial's own, by its position among the bucket's
                a, slope = _activate(z, act, activations)
            if dropout:  # the vmapped step's draws (jaxhp.bits), unit by unit
                seed = bits.row_seeds(key_ref[0], key_ref[1], jnp.uint32(layer), rows)
                units_i = jax.lax.broadcasted_iota(jnp.uint32, a.shape, 1)
                drawn = bits.unit_uniforms(seed[:, None], units_i) < keep_rate
                a = jnp.where(drawn, a / keep_rate, 0.0)
                slope = slope & drawn if slope.dtype == bool else slope * drawn
            masks.append(slope.astype(jnp.float32))
            if layer < min_depth:
                used.append(None)
                h = a
            else:
                used.append(layer < n_layers)
                h = jnp.where(used[-1], a, h)
        out = _dot(h, weight(2 * depth), (1, 0), dot_dtype) + weight(2 * depth + 1)
        cols = jax.lax.broadcasted_iota(jnp.int32, out.shape, 1)
        if classifier:
            y = _load(y_ref, (batch,))
            logits = jnp.where(cols < n_out, out, -jnp.inf)
            shifted = logits - jnp.max(logits, axis=1, keepdims=True)
            ez = jnp.exp(shifted)
            total = jnp.sum(ez, axis=1, keepdims=True)
            hot = cols == y[:, None]
            label = jnp.sum(jnp.where(hot, shifted, 0.0), axis=1)
            row_loss = jnp.log(total[:, 0]) - label
            g = (ez / total - hot.astype(jnp.float32)) * scale[:, None]
        else:
            y = _load(y_ref, (batch, n_out))
            diff = jnp.where(cols < n_out, out - y, 0.0)
            row_loss = jnp.sum(diff * diff, axis=1) / n_out
            g = diff * (2.0 / n_out) * scale[:, None]
        _store(loss_ref, jnp.where(rowmask > 0, row_loss, 0.0) / n_real, (batch,))

        def update(i, grad):
            """jaxhp.optim's update of leaf i (Adam, AdamW or SGD with momentum, by
            the trial's code). The new values overwrite the old (aliased buffers): a
            layer's kernel update first waits at a barrier until every thread has
            read that layer's old weights (its matmuls' operands are spread over the
            threads). A program trains one trial, so its optimizer is one scalar: a
            bucket that mixes them switches to that one's update alone (jaxhp.optim,
            vmapped, computes each and selects)."""
            if i % 2 == 0:
                barrier()
            w = _load(p_in[i], real(i))
            m = _load(mu_in[i], real(i))

            def sgd():
                m_s = mom * m + (grad + wd * w)
                _store(p_out[i], w - lr * m_s, real(i))
                _store(mu_out[i], m_s, real(i))

            def adam(decoupled: bool):
                def run():  # AdamW: the decay on the update, not in the gradient
                    g = grad if decoupled else grad + wd * w
                    v = _load(nu_in[i], real(i))
                    m_a = B1 * m + (1.0 - B1) * g
                    v_a = B2 * v + (1.0 - B2) * g * g
                    u = (m_a / bc1) / (jnp.sqrt(v_a / bc2) + EPS)
                    if decoupled:
                        u = u + wd * w
                    _store(p_out[i], w - lr * u, real(i))
                    _store(mu_out[i], m_a, real(i))
                    _store(nu_out[i], v_a, real(i))  # (SGD leaves nu as it is)

                return run

            rules = {ADAM: adam(False), ADAMW: adam(True), SGD: sgd}
            if len(kinds) == 1:
                rules[kinds[0]]()
            else:
                jax.lax.switch(kind_at, [rules[k] for k in kinds])

        # Backward, from the output layer down. g: the gradient at the layer's output.
        # Each layer's input gradient is taken from its old weights before its update.
        g_in = _dot(g, weight(2 * depth), (1, 1), dot_dtype)
        update(2 * depth, _dot(h, g, (0, 0), dot_dtype))
        update(2 * depth + 1, jnp.sum(g, axis=0))
        g = g_in
        for layer in reversed(range(depth)):
            if used[layer] is None:
                g_a, g_pass = g, None
            else:  # the cotangents of where(used, a, h)
                g_a = jnp.where(used[layer], g, 0.0)
                g_pass = jnp.where(used[layer], 0.0, g)
            g_z = g_a * masks[layer]
            if dropout:  # as the vmapped step's derivative of a / keep_rate
                g_z = g_z / keep_rate
            if layer:
                g_in = _dot(g_z, weight(2 * layer), (1, 1), dot_dtype)
                if g_pass is not None:
                    g_in = g_in + g_pass
            update(2 * layer, _dot(hs[layer], g_z, (0, 0), dot_dtype))
            update(2 * layer + 1, jnp.sum(g_z, axis=0))
            if layer:
                g = g_in

    jax.lax.cond((keep > 0) & (count > 0), train, skip)


def _need_triton():
    """Pallas's Triton backend, or a ``RuntimeError`` saying this JAX has none."""
    if (triton := _pltriton()) is None:
        raise RuntimeError(
            f"the fused step runs on Pallas's Triton backend, which JAX "
            f"{jax.__version__} does not have; use jaxhp.tasks.MLPClassifier or "
            "MLPRegressor (the vmapped step)"
        )
    return triton


def _compiler_params(num_warps: int):
    """Pallas's Triton parameters: ``num_warps`` a program, no software pipelining."""
    triton = _need_triton()
    # (named TritonCompilerParams in older JAX releases)
    cls = getattr(triton, "CompilerParams", None) or triton.TritonCompilerParams
    return cls(num_warps=num_warps, num_stages=1)


def _barrier(interpret: bool):
    """A barrier across the program's threads (Triton's); the interpreter runs a
    program as one thread and needs none."""
    if interpret:
        return lambda: None
    return _need_triton().debug_barrier


def _layers(depth: int) -> list[str]:
    """The MLP's layers in order (``_MaskedMLP``'s parameter names)."""
    return [f"hidden_{i}" for i in range(depth)] + ["out"]


def _leaves(params: dict, depth: int) -> list:
    """The parameters in layer order: kernel, bias of hidden_0 ... hidden_{d-1}, out."""
    return [params[n][k] for n in _layers(depth) for k in ("kernel", "bias")]


def _unleaves(flat: list, depth: int) -> dict:
    """``_leaves``' inverse."""
    return {
        n: {"kernel": flat[2 * i], "bias": flat[2 * i + 1]}
        for i, n in enumerate(_layers(depth))
    }


def population_step(
    tr: Any, hp: dict, keep: jax.Array, *, platform: str
) -> tuple[tuple, Callable[..., tuple[Any, jax.Array]]]:
    """``(args, step)``, ``step(*args, state, batch) -> (state, loss)`` being one step
    of every member, with hyperparameters ``hp`` ``[M]`` and ``keep`` ``[M]`` bool. The
    engine calls this once an epoch, outside its step loop, so ``args`` (the kernel's
    table of hyperparameters, ``[M, 8]``, ``[M, 11]`` with a learning-rate
    schedule) is built once, not in every step; every
    array of ``args``, ``state`` and ``batch`` leads with the member axis, so the engine
    can split them over devices (``shard_map``).

    ``state`` is an ``MLPState`` ``[M, ...]`` and ``batch`` a ``Batch`` ``[M, B, ...]``
    whose real rows are its first ``batch.count`` (``[M]``), as the engine makes them
    (``batch.mask`` is not read). A member trains where ``keep`` is on and its batch has
    rows. ``loss`` is the per-row terms ``[M, B]`` (zero for a member that did not
    train)."""
    # check() has vetted the space; a bucket built without it is vetted here.
    if not set(tr.activations) <= set(range(len(ACTIVATIONS))):
        raise ValueError(
            f"the fused step has activations {list(ACTIVATIONS)}; this bucket "
            f"has activation codes {list(tr.activations)}"
        )
    if tr.dropout and tr.dropout_draws != "hash":
        raise ValueError(
            "the fused step draws dropout with jaxhp.bits (DROPOUT_DRAWS='hash'); "
            f"this bucket draws it with {tr.dropout_draws!r}"
        )
    if tr.width > MAX_WIDTH:
        raise ValueError(
            f"the fused step takes width at most {MAX_WIDTH}; this bucket is "
            f"{tr.width} wide"
        )
    if platform == "gpu":
        _need_triton()
    hp_cols = jnp.stack(
        [
            hp["learning_rate"].astype(jnp.float32),
            hp["momentum"].astype(jnp.float32),
            hp["weight_decay"].astype(jnp.float32),
            hp["n_layers"].astype(jnp.float32),
            keep.astype(jnp.float32),
            hp["optimizer"].astype(jnp.float32),
            1.0 - hp["dropout"].astype(jnp.float32),  # the vmapped step's keep rate
            # The trial's activation, by its position among the bucket's.
            jnp.searchsorted(
                jnp.asarray(tr.activations), hp["activation"].astype(jnp.int32)
            ).astype(jnp.float32),
        ]
        # The schedule's numbers, past what the kernel reads: each step scales the
        # learning rate in column 0 with them (jaxhp.optim.lr_scale).
        + (
            [
                hp[k].astype(jnp.float32)
                for k in ("lr_schedule", "warmup", "total_steps")
            ]
            if tr.scheduled
            else []
        ),
        axis=1,
    )
    return (hp_cols,), functools.partial(_step, tr, platform)


def _step(tr: Any, platform: str, hp_cols: jax.Array, state: Any, batch: Any):
    depth, width = tr.depth, tr.width
    m, b = batch.x.shape[0], batch.x.shape[1]
    x = batch.x.reshape(m, b, -1)
    n_in = x.shape[2]
    classifier = tr.kind == "classifier"
    y = batch.y.astype(jnp.int32) if classifier else batch.y.reshape(m, b, -1)
    has_adam = ADAM in tr.optimizers or ADAMW in tr.optimizers
    rows = batch.count.astype(jnp.int32)
    # jaxhp.optim counts steps for Adam's bias corrections and the learning rate's
    # schedule: a member that trains counts this one (the kernel leaves the others).
    trains = (hp_cols[:, 4] > 0) & (rows > 0)
    counted = has_adam or tr.scheduled  # jaxhp.optim's rule
    count = state.opt.count + trains if counted else state.opt.count
    t = count.astype(jnp.float32)
    if tr.scheduled:  # this step's learning rate, as jaxhp.optim.opt_update's
        names = ("lr_schedule", "warmup", "total_steps")  # columns 8, 9, 10
        scale = lr_scale(count, dict(zip(names, hp_cols[:, 8:11].T, strict=True)))
        hp_cols = hp_cols.at[:, 0].multiply(scale)
    step_cols = jnp.stack(
        [rows.astype(jnp.float32), 1.0 - B1**t, 1.0 - B2**t, jnp.zeros_like(t)], axis=1
    )
    params = _leaves(state.params, depth)
    mu = _leaves(state.opt.mu, depth)
    nu = _leaves(state.opt.nu, depth) if has_adam else []
    # Dropout's seed: the two words of each member's step key (jaxhp.bits).
    keys = [jnp.stack(bits.key_words(batch.key), axis=1)] if tr.dropout else []
    ins = [hp_cols, step_cols, *keys, x, y, *params, *mu, *nu]

    def spec(a):
        """Program i's slice of a [M, ...] array, each dimension tiled to a power of two."""
        tile = tuple(_tile(d) for d in a.shape[1:])
        return pl.BlockSpec((None, *tile), lambda i, n=a.ndim - 1: (i,) + (0,) * n)

    states = [*params, *mu, *nu]
    n_fixed = len(ins) - len(states)  # hp_cols, step_cols, (keys), x, y
    interpret = platform != "gpu"
    kwargs = {} if interpret else {"compiler_params": _compiler_params(NUM_WARPS)}
    cfg = (
        depth,
        max(1, min(tr.min_depth, depth)),
        n_in,
        tr.n_out,
        width,
        b,
        classifier,
        jnp.dtype(tr.compute_dtype),
        tuple(tr.optimizers),
        tr.dropout,
        tuple(ACTIVATIONS[c] for c in tr.activations),
        _barrier(interpret),
    )
    loss_shape = jax.ShapeDtypeStruct((m, b), jnp.float32)
    outs = pl.pallas_call(
        functools.partial(_kernel, cfg),
        grid=(m,),
        in_specs=[spec(a) for a in ins],
        out_specs=[spec(a) for a in states] + [spec(loss_shape)],
        out_shape=[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in states]
        + [loss_shape],
        input_output_aliases={n_fixed + i: i for i in range(len(states))},
        interpret=interpret,
        **kwargs,
    )(*ins)
    n = len(params)
    new_params = _unleaves(outs[:n], depth)
    new_mu = _unleaves(outs[n : 2 * n], depth)
    new_nu = _unleaves(outs[2 * n : 3 * n], depth) if has_adam else state.opt.nu
    opt = state.opt._replace(count=count, mu=new_mu, nu=new_nu)
    # No compute-dtype copy of the weights (MLPTrainable._low): the kernel casts them.
    return MLPState(new_params, opt, None), outs[-1]
