"""Where a round's device time goes: the engine and the plain vmap baseline, profiled.

Runs one round of each (the throughput benchmark's homogeneous MLP, population ``--population``)
under ``jax.profiler.trace`` and summarises the trace's device events by kernel name: total
time, count and share, so that the kernels worth fusing or replacing can be read off later
without a device. Writes JSON (``--out``) and prints the top kernels of each arm.

    python benchmarks/investigations/gpu_profile.py --population 4096 1 --out profile.json

On a CPU the "device" events are XLA's host thunks; the script runs there too (a smoke
run), but it is meant for a lent GPU (``gpu_check.sh`` calls it).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

# benchmarks/ (throughput, runinfo) and the repository root (jaxhp).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import throughput as tp  # noqa: E402
from runinfo import run_header  # noqa: E402

from jaxhp.engine import run_population  # noqa: E402


def summarise(trace_dir: str, top: int) -> dict:
    """Per-kernel totals of a perfetto trace (``create_perfetto_trace=True``)."""
    files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if not files:
        return {"error": f"no perfetto trace under {trace_dir}"}
    with gzip.open(files[0], "rt") as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    pname = {
        e["pid"]: e.get("args", {}).get("name", "")
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    by_proc: dict[str, collections.Counter] = collections.defaultdict(
        collections.Counter
    )
    counts: dict[str, collections.Counter] = collections.defaultdict(
        collections.Counter
    )
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        proc = pname.get(e["pid"], str(e["pid"]))
        by_proc[proc][e["name"]] += float(e["dur"])
        counts[proc][e["name"]] += 1
    out = {}
    # The engine's host phases (engine._phase annotations), whatever their rank.
    out["phases"] = {
        name: {"us": us, "count": counts[proc][name]}
        for proc, c in by_proc.items()
        for name, us in c.items()
        if name.startswith("jaxhp.")
    }
    for proc, c in by_proc.items():
        total = sum(c.values())
        out[proc] = {
            "total_us": total,
            "events": sum(counts[proc].values()),
            "top": [
                {
                    "name": name[:160],
                    "us": us,
                    "count": counts[proc][name],
                    "share": us / total if total else 0.0,
                }
                for name, us in c.most_common(top)
            ],
        }
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--population",
        type=int,
        nargs="+",
        default=[4096],
        help="one or more population sizes, each profiled in turn",
    )
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    tasks = {}
    for dt in ("float32", "bfloat16"):
        tasks[dt], space, base = tp.reference_task(compute_dtype=dt)
    train_val = base.train_val
    vmap_val = jax.jit(jax.vmap(train_val))
    result = run_header("gpu_profile", runs=[])
    for P in args.population:
        result["runs"].append(profile_population(P, tasks, space, vmap_val, args.top))
        tp.save_json(args.out, result)
    return result


def _options() -> dict:
    """Profile without the Python tracer: it slows every Python call several times over,
    which inflates the host phases being measured (the engine's annotations, C++ and
    XLA's events remain)."""
    try:
        opts = jax.profiler.ProfileOptions()
        opts.python_tracer_level = 0
        return {"profiler_options": opts}
    except (AttributeError, TypeError):  # an older JAX: no options
        return {}


def profile_population(P, tasks, space, vmap_val, top) -> dict:
    """Profile one round of each arm at population ``P`` and print the top kernels."""
    hp_np = tp.hparams(P, P)
    hp_task = tasks["float32"].hparams(space, hp_np)
    hp_dev = {k: jnp.asarray(v) for k, v in hp_np.items()}
    keys = tp.trial_keys(P)
    ids = np.arange(P)

    def engine(dt):
        return lambda: run_population(
            tasks[dt],
            hp_task,
            ids,
            seed=0,
            bucketing="none",
            segment_epochs=tp.EPOCHS,
        )[0]

    arms = {
        "engine": engine("float32"),
        "engine_bf16": engine("bfloat16"),
        "vmap_val": lambda: vmap_val(keys, hp_dev),
    }
    run = {"population": P, "arms": {}}
    for name, fn in arms.items():
        jax.block_until_ready(fn())  # compile outside the trace
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        wall = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with jax.profiler.trace(tmp, create_perfetto_trace=True, **_options()):
                    jax.block_until_ready(fn())
                summary = summarise(tmp, top)
            except Exception as e:  # a profiler that does not run there is reported
                summary = {"error": f"{type(e).__name__}: {e}"}
        run["arms"][name] = {"wall_s": wall, "trace": summary}
        print(f"\n== {name}: P={P}, {wall:.4f} s per round (untraced)")
        if "error" in summary:
            print("  ", summary["error"])
            continue
        for name, ph in summary["phases"].items():
            print(f"  {name:<20} {ph['us'] / 1e3:9.2f} ms x{ph['count']}")
        for proc, s in summary.items():
            if proc == "phases" or s["total_us"] < 0.05 * wall * 1e6:
                continue  # skip processes with little time (host bookkeeping)
            print(f"  [{proc}] {s['total_us'] / 1e3:.1f} ms in {s['events']} events")
            for k in s["top"][:12]:
                print(
                    f"    {k['share']:6.1%} {k['us'] / 1e3:9.2f} ms x{k['count']:<6} "
                    f"{k['name'][:90]}"
                )
    return run


if __name__ == "__main__":
    main()
