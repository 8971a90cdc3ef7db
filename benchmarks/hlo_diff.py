"""The compiled programs of the engine's segment and of ``vmap_val``, kernel by kernel.

A GPU profile (benchmarks/RESULTS.md, third lease) found the engine's optimizer step
running a few more kernels than the hand-written ``vmap_val`` at P = 1024 (3.5 ms of
step kernels against 2.2 per round), but a profile names fusions, not the source
lines behind them. This script compiles both programs for the current backend (the
throughput benchmark's reference MLP and hyperparameters, at each ``--population``),
writes their optimized HLO text to ``--dump`` for reading offline, and summarises each
``while`` loop body: how many instructions of each kind it runs (a GPU launches a
kernel per fusion, custom call or copy at the body's top level) and the fusions'
one-line signatures, so that the step loops of the two programs can be put side by
side without a device.

    python benchmarks/hlo_diff.py --population 64 1024 --dump hlo/ --out hlo_diff.json

Runs on any backend (on a CPU the fusions are the CPU's, not the GPU's).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import throughput as tp  # noqa: E402
from runinfo import run_header  # noqa: E402

from jaxhp import engine  # noqa: E402

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--population", type=int, nargs="+", default=[1024])
    ap.add_argument("--dump", default=None, help="write the optimized HLO texts here")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    task, space, base = tp.reference_task()
    data = engine._device_data(task)
    result = run_header("hlo_diff", populations={})
    for P in args.population:
        hp_np = tp.hparams(P, P)
        hp = task.hparams(space, hp_np)
        _, spec = engine._bucket_spec(task, hp, tp.EPOCHS, None)
        comp = engine._programs(spec, task.data.n_folds)
        ids = np.arange(P, dtype=np.uint32)
        keys, run = comp.init(
            np.uint32(0), engine.host_rows((ids, hp, np.ones(P, bool)))
        )
        seg = comp.segment.lower(
            run, engine.host_rows(hp), keys, data, np.int32(tp.EPOCHS)
        )
        hp_dev = {k: jnp.asarray(v) for k, v in hp_np.items()}
        val = jax.jit(jax.vmap(base.train_val)).lower(tp.trial_keys(P), hp_dev)
        texts = {
            "engine": seg.compile().as_text(),
            "vmap_val": val.compile().as_text(),
        }
        result["populations"][str(P)] = {
            "spec": repr(spec),
            "programs": {name: summarise(t) for name, t in texts.items()},
        }
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            for name, t in texts.items():
                with open(os.path.join(args.dump, f"{name}_P{P}.hlo.txt"), "w") as f:
                    f.write(t)
        tp.save_json(args.out, result)
        for name, bodies in result["populations"][str(P)]["programs"].items():
            print(f"P={P} {name}:")
            for b in bodies:
                print(f"  while body {b['body']}: {b['launches']} launches {b['ops']}")
    return result


if __name__ == "__main__":
    main()
