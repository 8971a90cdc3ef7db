"""The compiled programs of the engine's segment and of the vmap baselines, kernel by
kernel.

A GPU profile (benchmarks/RESULTS.md, third lease) found the engine's optimizer step
running a few more kernels than the hand-written ``vmap_val`` at P = 1024 (3.5 ms of
step kernels against 2.2 per round), but a profile names fusions, not the source
lines behind them. This script compiles the programs (the engine's segment validating
every epoch and only after the last, its initial-state program, ``vmap_val`` and the
plain ``vmap``: the throughput benchmark's reference MLP and hyperparameters, at each
``--population``), writes their optimized HLO text to ``--dump`` for reading offline,
and summarises each program:

- each ``while`` loop body: how many instructions of each kind it runs (a GPU launches
  a kernel per fusion, custom call or copy at the body's top level) and the fusions'
  one-line signatures, so that the step loops of the two programs can be put side by
  side;
- the whole program: the kernels it launches in one call (each loop body counted by
  its trip count) and a roofline estimate of its device time, kernel by kernel the
  largest of a launch's floor, its bytes (operands and result) at the device's
  bandwidth and its matmul FLOPs at the small matmuls' rate (``--bandwidth``,
  ``--matmul-rate``, ``--launch``: by default the H200's, as measured on the third
  lease). A model, not a measurement: it ignores caches and overlap.

``--target host`` (the default) compiles for the backend JAX runs on. ``--target
h200`` or ``h100`` compiles for that GPU **without one**: XLA's GPU compiler runs on
the host against a description of the device (``jax.experimental.topologies``; it needs
JAX's CUDA plugin at the installed JAX's version, ``pip install "jax[cuda13]==X.Y.Z"``,
not a GPU), so the GPU's own fusions can be read and counted on a machine that has
none. GEMM autotuning needs a device, so the matmuls' configurations are XLA's
defaults; the fusions are the GPU's.

    python benchmarks/investigations/hlo_diff.py --population 64 1024 --dump hlo/ --out hlo_diff.json
    python benchmarks/investigations/hlo_diff.py --target h200 --population 1 64 1024
    python benchmarks/investigations/hlo_diff.py --target h200 --compute-dtype bfloat16 --population 64

A rough calibration: for P = 1 and 1024 it estimates 10.0 and 67.7 ms of device time
for the engine's round (the code of 2026-11-29, before the per-step freeze) and 10.4 and
65.9 for ``vmap_val``; the third lease's profile measured 10.3 and 68.9, and 10.3 and
63.0 (the engine's code of then, whose step differed a little).
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

# benchmarks/ (throughput, runinfo) and the repository root (jaxhp).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import throughput as tp  # noqa: E402
from runinfo import run_header  # noqa: E402

from jaxhp import engine  # noqa: E402
from jaxhp.engine.planning import bucket_spec  # noqa: E402
from jaxhp.engine.transfer import host_rows  # noqa: E402

# Instructions that launch nothing of their own at a computation's top level.
_FREE = {
    "parameter",
    "constant",
    "get-tuple-element",
    "tuple",
    "bitcast",
    "after-all",
    "opt-barrier",
}

# A GPU's description for XLA's compiler (``--target``): what its cost models and
# tiling read. The H100's values as in the deviceless-compilation examples of XLA's and
# JAX's issue trackers; the H200 differs in its memory (size and bandwidth).
_GPU_INFO = """
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth}
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: {memory}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: 9 }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 10 }}
runtime_version {{ major: 13 minor: 0 patch: 0 }}
device_description_str: "{name}"
"""
TARGETS = {
    "h100": _GPU_INFO.format(
        bandwidth=3352320000000, memory=84929347584, name="NVIDIA H100 80GB HBM3"
    ),
    "h200": _GPU_INFO.format(
        bandwidth=4800000000000, memory=150754820096, name="NVIDIA H200"
    ),
}


def target_sharding(target: str):
    """A sharding on one device of ``target`` (``"host"``: None, JAX's own backend).
    For a GPU target, a compile-only device: arguments placed on it make ``jit`` compile
    for that GPU. Call before anything else touches a backend."""
    if target == "host":
        return None
    from jax.experimental import topologies

    jax.config.update("jax_platforms", "cpu")  # the host runs nothing but the compiler
    try:
        topo = topologies.get_topology_desc(
            platform="cuda", target_config=TARGETS[target], topology="1x1x1"
        )
    except (NotImplementedError, RuntimeError) as e:
        raise SystemExit(
            f"compiling for {target} without a GPU needs JAX's CUDA plugin at JAX's "
            f"version: pip install 'jax[cuda13]=={jax.__version__}' (a side "
            f"environment will do); {e}"
        ) from e
    mesh = topologies.make_mesh(topo=topo, mesh_shape=(1,), axis_names=("x",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def shapes_on(sharding, tree):
    """``tree``'s leaves as shapes (placed on ``sharding`` when it is given)."""

    def one(a):
        a = a if hasattr(a, "dtype") else np.asarray(a)
        return jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=sharding)

    return jax.tree.map(one, tree)


_HEAD = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_OP = re.compile(r"=\s.*?\s([a-z][a-z0-9\-]*)\(")
_WHILE_BODY = re.compile(r"\bwhile\(.*\bbody=%?([\w.\-]+)")


def computations(text: str) -> dict[str, list[str]]:
    """The HLO module's computations: name -> instruction lines."""
    out: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        if name is None:
            m = _HEAD.match(line)
            if m and " = " not in line:
                name = m.group(1)
                out[name] = []
        elif line.startswith("}"):
            name = None
        elif " = " in line:
            out[name].append(line.strip())
    return out


def summarise(text: str, top: int = 4) -> list[dict]:
    """The ``while`` bodies, largest first: opcode counts and fusion signatures."""
    comps = computations(text)
    bodies = {
        m.group(1)
        for lines in comps.values()
        for ln in lines
        if (m := _WHILE_BODY.search(ln))
    }
    rows = []
    for body in bodies:
        ops = collections.Counter()
        fusions = []
        for ln in comps.get(body, []):
            m = _OP.search(ln)
            if not m or m.group(1) in _FREE:
                continue
            op = m.group(1)
            ops[op] += 1
            if op in ("fusion", "custom-call", "copy"):
                lhs, rhs = ln.split(" = ", 1)
                kind = re.search(r"kind=(\w+)", rhs)
                target = re.search(r'custom_call_target="([^"]+)"', rhs)
                shape = rhs.split(f" {op}(")[0]
                fusions.append(
                    f"{op}:{(kind or target).group(1) if (kind or target) else ''} "
                    f"{lhs.strip().lstrip('%')} -> {shape[:120]}"
                )
        rows.append(
            {
                "body": body,
                "launches": sum(ops.values()) - ops.get("while", 0),
                "ops": dict(ops.most_common()),
                "kernels": fusions,
            }
        )
    rows.sort(key=lambda r: -r["launches"])
    return rows[:top]


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2}
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_INSTR = re.compile(
    r"^(?:ROOT\s+)?%?([\w.\-]+)\s+=\s+(\(.*?\)|\S+)\s+([a-z][a-z0-9\-]*)\("
)


def _nbytes(shape: str) -> int:
    """Bytes of an HLO shape (a tuple's summed)."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        size = math.prod(int(d) for d in dims.split(",") if d)
        total += size * _DTYPE_BYTES.get(dtype, 8 if dtype.endswith("64") else 4)
    return total


def _operands(line: str, start: int) -> list[str]:
    """The operand names of the call whose argument list starts at ``start``."""
    depth, i = 1, start
    while i < len(line) and depth:
        depth += {"(": 1, ")": -1}.get(line[i], 0)
        i += 1
    return re.findall(r"%([\w.\-]+)", line[start : i - 1])


def estimate(
    text: str, bandwidth: float, matmul_rate: float, launch: float
) -> dict[str, float]:
    """Kernels launched by one call of the module's entry, and a roofline estimate of
    its device time: per kernel, max(launch, bytes / bandwidth, matmul FLOPs /
    matmul_rate), loop bodies counted by their known trip counts. A kernel's bytes are
    its result's and its operands' (each buffer once), except what it only slices or
    gathers from (the slice's bytes) and what it updates in place (a
    dynamic-update-slice: the update's).
    A conditional counts a launch and its cheapest branch each time it runs, and the
    rest of its dearest branch once per call (the engine's validation every
    ``eval_every`` epochs runs in full about once a round)."""
    comps = computations(text)
    shapes, parsed = {}, {}
    for name, lines in comps.items():
        parsed[name] = []
        for ln in lines:
            m = _INSTR.match(ln)
            if m:
                shapes[m.group(1)] = m.group(2)
                parsed[name].append((m, ln))

    def dot_flops(shape: str, ops: list[str], ln: str) -> float:
        lhs = _ARRAY.findall(shapes.get(ops[0], ""))
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ln)
        k = 1
        if lhs and contracting:
            dims = [int(d) for d in lhs[0][1].split(",") if d]
            k = math.prod(dims[int(c)] for c in contracting.group(1).split(",") if c)
        size = _ARRAY.findall(shape)[0][1]
        return 2.0 * k * math.prod(int(d) for d in size.split(",") if d)

    def fused(callee: str) -> tuple[float, dict[int, int], int | None]:
        """A fused computation's matmul FLOPs, the bytes it reads of each parameter
        that it only slices or gathers from (0: updated in place), and its result's
        bytes when its root is an in-place update."""
        flops, params, uses, out = 0.0, {}, {}, None
        for m, ln in parsed.get(callee, []):
            iname, shape, op = m.groups()
            ops = _operands(ln, m.end())
            if op == "parameter":
                params[iname] = int(re.search(r"parameter\((\d+)\)", ln).group(1))
            for pos, o in enumerate(ops):
                uses.setdefault(o, []).append((op, pos, _nbytes(shape)))
            if op == "dynamic-update-slice" and ln.startswith("ROOT"):
                out = _nbytes(shapes.get(ops[1], ""))
            if op == "dot":
                flops += dot_flops(shape, ops, ln)
        partial = {}
        for name, i in params.items():
            use = uses.get(name, [])
            if use and all(
                op in ("dynamic-slice", "gather", "slice") and pos == 0
                for op, pos, _ in use
            ):
                partial[i] = sum(b for _, _, b in use)
            elif use and all(
                op == "dynamic-update-slice" and pos == 0 for op, pos, _ in use
            ):
                partial[i] = 0
        return flops, partial, out

    def cost(name: str) -> tuple[float, float, float, float]:
        """(seconds, kernels) each time ``name`` runs, and (seconds, kernels) once
        per call of the program (conditionals' dearest branches)."""
        seconds = kernels = once_s = once_k = 0.0
        for m, ln in parsed.get(name, []):
            iname, shape, op = m.groups()
            if op == "while":
                body = re.search(r"body=%?([\w.\-]+)", ln).group(1)
                trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', ln)
                s, k, os_, ok = cost(body)
                n = int(trip.group(1)) if trip else 1
                seconds, kernels = seconds + n * s, kernels + n * k
                once_s, once_k = once_s + os_, once_k + ok
                continue
            if op == "call":
                s, k, os_, ok = cost(re.search(r"to_apply=%?([\w.\-]+)", ln).group(1))
                seconds, kernels, once_s, once_k = (
                    seconds + s,
                    kernels + k,
                    once_s + os_,
                    once_k + ok,
                )
                continue
            if op == "conditional":
                names = re.findall(
                    r"(?:true|false)_computation=%?([\w.\-]+)", ln
                ) or re.findall(
                    r"%([\w.\-]+)", re.search(r"branch_computations=\{([^}]*)\}", ln)[1]
                )
                branches = sorted(cost(b) for b in names)
                lo, hi = branches[0], branches[-1]
                seconds, kernels = seconds + launch + lo[0], kernels + 1 + lo[1]
                once_s += hi[0] + hi[2] - lo[0]
                once_k += hi[1] + hi[3] - lo[1]
                continue
            if op in _FREE:
                continue
            ops = _operands(ln, m.end())
            callee = re.search(r"calls=%?([\w.\-]+)", ln)
            flops, partial, out = fused(callee.group(1)) if callee else (0.0, {}, None)
            if op == "dot":  # a matmul of its own (the CPU's, unfused)
                flops = dot_flops(shape, ops, ln)
            reads = {}  # an operand passed twice (x.T @ x) is read once
            for i, o in enumerate(ops):
                full = _nbytes(shapes.get(o, ""))
                reads[o] = max(reads.get(o, 0), min(full, partial.get(i, full)))
            moved = (_nbytes(shape) if out is None else out) + sum(reads.values())
            seconds += max(launch, moved / bandwidth, flops / matmul_rate)
            kernels += 1
        return seconds, kernels, once_s, once_k

    entry = re.search(r"^ENTRY\s+%?([\w.\-]+)", text, re.M).group(1)
    seconds, kernels, once_s, once_k = cost(entry)
    return {
        "kernels": int(kernels + once_k),
        "est_ms": round((seconds + once_s) * 1e3, 3),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--population", type=int, nargs="+", default=[1024])
    ap.add_argument(
        "--target",
        choices=["host", *TARGETS],
        default="host",
        help="compile for JAX's backend, or for this GPU without one",
    )
    ap.add_argument("--bandwidth", type=float, default=3.6e12, help="bytes/s")
    ap.add_argument("--matmul-rate", type=float, default=42e12, help="FLOP/s")
    ap.add_argument("--launch", type=float, default=1.5e-6, help="s per kernel")
    ap.add_argument(
        "--compute-dtype",
        default="float32",
        help="the engine's compute_dtype (the vmap baselines stay float32)",
    )
    ap.add_argument(
        "--fused",
        action="store_true",
        help="the engine training experiments/fused's FusedMLPClassifier: each step of "
        "the population one Pallas kernel (the estimate charges it its HBM bytes "
        "alone: a floor)",
    )
    ap.add_argument("--dump", default=None, help="write the optimized HLO texts here")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sharding = target_sharding(args.target)
    platform = "gpu" if sharding is not None else None
    task_class = None
    if args.fused:
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(0, os.path.join(here, "..", "..", "experiments", "fused"))
        from fused_task import FusedMLPClassifier as task_class  # noqa: PLC0415
    task, space, base = tp.reference_task(task_class, compute_dtype=args.compute_dtype)
    data = engine.data.device_data(task)
    options = engine.EngineOptions.for_platform(platform or jax.default_backend())
    result = run_header(
        "hlo_diff",
        target=args.target,
        compute_dtype=args.compute_dtype,
        fused=args.fused,
        populations={},
    )
    roofline = {
        "bandwidth": args.bandwidth,
        "matmul_rate": args.matmul_rate,
        "launch": args.launch,
    }
    result["roofline"] = roofline
    for P in args.population:
        hp_np = tp.hparams(P, P)
        hp = task.hparams(space, hp_np)
        ids = np.arange(P, dtype=np.uint32)
        init_args = (np.uint32(0), host_rows((ids, hp, np.ones(P, bool))))
        texts = {}
        # The engine validating every epoch, and only after the last (the plain
        # vmap's work).
        for name, every in (("engine", 1), ("engine_eval_end", tp.EPOCHS)):
            _, spec = bucket_spec(task, hp, tp.EPOCHS, None, options, every)
            comp = engine.DEFAULT_CACHE.get(spec, task.data.n_folds)
            keys, run = jax.eval_shape(comp.init, *init_args)
            seg_args = (run, host_rows(hp), keys, data, np.int32(tp.EPOCHS))
            seg = comp.segment.lower(*shapes_on(sharding, seg_args))
            texts[name] = seg.compile().as_text()
        init = comp.init.lower(*shapes_on(sharding, init_args))
        texts["engine_init"] = init.compile().as_text()
        hp_dev = {k: jnp.asarray(v) for k, v in hp_np.items()}
        for name, fn in (("vmap_val", base.train_val), ("vmap", base.train)):
            lowered = jax.jit(jax.vmap(fn)).lower(
                *shapes_on(sharding, (tp.trial_keys(P), hp_dev))
            )
            texts[name] = lowered.compile().as_text()
        result["populations"][str(P)] = {
            "spec": repr(spec),
            "programs": {
                name: {"loops": summarise(t), **estimate(t, **roofline)}
                for name, t in texts.items()
            },
        }
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            for name, t in texts.items():
                with open(os.path.join(args.dump, f"{name}_P{P}.hlo.txt"), "w") as f:
                    f.write(t)
        tp.save_json(args.out, result)
        for name, prog in result["populations"][str(P)]["programs"].items():
            print(
                f"P={P} {name}: {prog['kernels']} kernels a call, "
                f"~{prog['est_ms']} ms estimated"
            )
            for b in prog["loops"]:
                print(f"  while body {b['body']}: {b['launches']} launches {b['ops']}")
    return result


if __name__ == "__main__":
    main()
