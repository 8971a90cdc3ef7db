#!/usr/bin/env bash
# The device check for a lent GPU: one command, a few minutes, JSON under $OUT (and
# everything, text and HLO dumps too, in $OUT/gpu_check_<mode>.tar.gz).
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh                  # the check: 1, 1b, 2, 3b, 5
#   OUT=/some/dir GPU_CHECK=diag bash benchmarks/gpu_check.sh    # diagnostics: 2b-2e, 3, 4
#   OUT=/some/dir GPU_CHECK=all bash benchmarks/gpu_check.sh     # both (up to 15.8
#                                      minutes at the caps: over one 10-minute call)
#
# The check holds what must be shown on a GPU (the engine against the plain vmap, a
# smoke sweep) and the candidates for a 2x speed-up (experiments/fused: the fused step,
# the whole-training kernels), so that a lease with time for one call spends it there;
# the diagnostics (benchmarks/investigations) say why. The most wanted figures first,
# each step under its own time cap (the check 9.2 minutes at most, the diagnostics
# 6.6), so that a step that fails or overruns leaves the others' JSON:
# 1. ceilings: the device's measured copy bandwidth and matmul rates (fp32 default,
#    fp32 highest, bf16), the yardsticks for the fraction-of-peak figures.
# 1b. the fused step: experiments/fused/fused_step_check.py, whether the experimental
#    fused step (one Pallas kernel a step) trains what the vmapped step trains on this
#    GPU: one step on odd sizes, and sweeps on digits and breast cancer. The CPU checks
#    run its arithmetic in Pallas's interpreter; barriers, padded tiles and Triton's
#    matmuls only a GPU can check.
# 2. throughput: benchmarks/throughput.py at P = 1, 64, 1024 and 16384, through
#    experiments/fused/throughput_fused.py (engine, engine in bf16, the engine with the
#    fused step in float32 and bf16, plain vmap and vmap_val, achieved TFLOP/s, bf16
#    accuracy effect; mixed architectures at P = 256, which fits the cap), capped at
#    260 s.
# 2b. round overhead: investigations/round_overhead.py at P = 1 and 1024, the engine's
#    switches as arms side by side (host arrays packed into one matrix or a leaf each,
#    the step's loss as per-row terms or a scalar, the epoch loop, device_put), and the
#    initial-state call alone, packed against unpacked.
# 2c. HLO: investigations/hlo_diff.py at P = 64 and 1024, the optimized HLO of the
#    engine's segment and of the vmap baselines (under $OUT/hlo), their loops' kernels
#    and roofline estimates: with the autotuned matmuls, to set against the estimates
#    made without a device (hlo_diff.py --target h200) and the profile in 3.
# 2d. (removed) host work: the host's phases of a round at
#    P = 16384 with a tiny model (planning, outcomes as columns, tune's records, the
#    commit), and sweeps of 4 rounds of 4096 reference MLPs on all of digits, with
#    storage committed in the round loop or on the writer thread
#    (tune.COMMIT_IN_BACKGROUND, on by default on a GPU).
# 2e. dropout: investigations/dropout_cost.py at P = 4096 (three compiles), the engine
#    without dropout, with threefry's draws and with jaxhp.bits' hash (the default).
# 3. profile: investigations/gpu_profile.py, the device time of one round by kernel and
#    the engine's host phases, for the engine (float32 and bf16) and vmap_val at P = 64
#    and 1024.
# 3b. fused kernel: experiments/fused/fused_mlp.py at P = 16384, the whole training in
#    one kernel: the two variants with the fewest register spills (fused_mlp.py
#    --resources h200, no device) against w4_bf16 and the plain vmap.
# 4. proposal cost: benchmarks/proposal_cost.py at n = 1000, d = 6, q = 64 and 1024.
# 5. smoke: the backend is a GPU; a small sweep (every strategy, k-fold, early stopping,
#    a diverging trial, several buckets; once more without a stopper, the fixed-count
#    epoch loop) runs and gives sane results on it; a run sharded over every local GPU
#    equals a one-GPU run when there are several.
# Runs from the checkout (no install): the device image already has jax, flax, optax,
# chex and scikit-learn.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
export PYTHONUNBUFFERED=1
PY=$(command -v python3 || command -v python)
MODE=${GPU_CHECK:-check}
check() { [[ $MODE != diag ]]; }
diag() { [[ $MODE != check ]]; }

check && { timeout 40 "$PY" - > "$OUT/ceilings.json" <<'PY' || status=1; }
import json, os, subprocess, time
import jax, jax.numpy as jnp

def best(fn, *a, n=10):
    jax.block_until_ready(fn(*a))
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); jax.block_until_ready(fn(*a)); ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]

out = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
       "jax": jax.__version__}
try:
    out["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit",
         "--format=csv"], capture_output=True, text=True, timeout=20).stdout
except Exception as e:
    out["nvidia_smi"] = repr(e)
M = int(os.environ.get("CEILING_N", 8192))  # matrix size; copy: 4 GiB (M=8192)
x = jax.random.normal(jax.random.key(0), (M * M * 16,), jnp.float32)
t = best(jax.jit(lambda v: v * 1.0001 + 0.5), x)
out["copy_GBps"] = 2 * x.nbytes / t / 1e9  # read + write
del x
k = jax.random.split(jax.random.key(1), 2)
for name, dt, prec in [("fp32_default", jnp.float32, None), ("fp32_highest", jnp.float32, "highest"),
                       ("tf32", jnp.float32, "tensorfloat32"), ("bf16", jnp.bfloat16, None)]:
    a = jax.random.normal(k[0], (M, M), dt)
    b = jax.random.normal(k[1], (M, M), dt)
    f = jax.jit(lambda a, b, prec=prec: jnp.matmul(a, b, precision=prec))
    out[f"matmul_{name}_TFLOPs"] = 2 * M**3 / best(f, a, b) / 1e12
print(json.dumps(out, indent=1))
PY

check && { timeout 75 "$PY" experiments/fused/fused_step_check.py --out "$OUT/fused_step.json" \
    > "$OUT/fused_step.txt" 2>&1 || status=1; }
check && { timeout 260 "$PY" experiments/fused/throughput_fused.py --populations 1 64 1024 16384 \
    --repeats 3 --min-seconds 1 --mixed-population 256 --out "$OUT/throughput.json" \
    > "$OUT/throughput.txt" 2>&1 || status=1; }
diag && { timeout 100 "$PY" benchmarks/investigations/round_overhead.py --populations 1 1024 \
    --repeats 3 --min-seconds 0.3 --out "$OUT/round_overhead.json" \
    > "$OUT/round_overhead.txt" 2>&1 || status=1; }
diag && { timeout 60 "$PY" benchmarks/investigations/hlo_diff.py --population 64 1024 \
    --dump "$OUT/hlo" --out "$OUT/hlo_diff.json" > "$OUT/hlo_diff.txt" 2>&1 || status=1; }
# (host_work.py was removed with the engine split; gpu_profile.py's phases remain.)
diag && { timeout 60 "$PY" benchmarks/investigations/dropout_cost.py --populations 4096 \
    --repeats 3 --out "$OUT/dropout_cost.json" > "$OUT/dropout_cost.txt" 2>&1 || status=1; }
diag && { timeout 60 "$PY" benchmarks/investigations/gpu_profile.py --population 64 1024 \
    --out "$OUT/profile.json" > "$OUT/profile.txt" 2>&1 || status=1; }
check && { timeout 100 "$PY" experiments/fused/fused_mlp.py --populations 16384 --repeats 2 \
    --variants w4_bf16 w8_stash_bf16 w8_memory_bf16 \
    --out "$OUT/fused.json" > "$OUT/fused.txt" 2>&1 || status=1; }
diag && { timeout 45 "$PY" benchmarks/proposal_cost.py --n 1000 --d 6 --q 64 1024 \
    --out "$OUT/proposal_cost.json" > "$OUT/proposal_cost.txt" 2>&1 || status=1; }
check && { timeout 75 "$PY" - > "$OUT/smoke.json" <<'PY' || status=1; }
import json, time
import jax, numpy as np
import jaxhp
from sklearn.datasets import load_digits

out = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
       "jax": jax.__version__}
X, y = load_digits(return_X_y=True)
task = jaxhp.tasks.MLPClassifier(X, y, folds=3, seed=0)
space = jaxhp.Space(
    learning_rate=jaxhp.Float(1e-4, 30.0, log=True),  # the top end diverges
    n_layers=jaxhp.Int(1, 3), width=jaxhp.Int(16, 256, log=True),
    batch_size=jaxhp.Choice([32, 128]), epochs=jaxhp.Int(3, 8),
    optimizer=jaxhp.Choice(["adam", "sgd"]),
)
for strategy in ("grid", "random", "sobol", "bayes"):
    t0 = time.perf_counter()
    res = jaxhp.tune(task, space, strategy, n_trials=64, population=32, seed=0,
                     early_stopping=jaxhp.stopping.Patience(2))
    out[strategy] = {"seconds": time.perf_counter() - t0, "best": res.best_value,
                     "summary": res.summary(), "buckets": res.stats["buckets"]}
# No stopper: an accelerator runs full segments' epochs as a fixed-count loop (segments
# of 2 epochs against budgets of 3-8: full ones, and short last ones on the while loop).
t0 = time.perf_counter()
res = jaxhp.tune(task, space, "random", n_trials=64, population=32, seed=1,
                 segment_epochs=2)
out["random_no_stopper"] = {"seconds": time.perf_counter() - t0, "best": res.best_value,
                            "summary": res.summary(), "buckets": res.stats["buckets"]}
ok = out["backend"] == "gpu" and all(
    out[s]["best"] > 0.9 for s in ("random", "sobol", "bayes", "random_no_stopper"))
if len(jax.devices()) > 1:
    one = jaxhp.tune(task, space, "sobol", n_trials=32, population=32, devices=jax.devices()[:1])
    many = jaxhp.tune(task, space, "sobol", n_trials=32, population=32)
    out["sharded_equals_one"] = bool(np.allclose(
        [t.value for t in one.trials], [t.value for t in many.trials], equal_nan=True, rtol=1e-4))
    ok = ok and out["sharded_equals_one"]
out["ok"] = bool(ok)
print(json.dumps(out, indent=1))
PY

cat "$OUT/ceilings.json" 2>/dev/null
tail -n 25 "$OUT"/{fused_step,throughput,round_overhead,hlo_diff,host_work,dropout_cost,profile,fused,proposal_cost}.txt 2>/dev/null
# What comes back from a lent machine is capped at 8 files (and 2 folders down): the
# diagnostics alone write 12 or more (the HLO dumps among them). So everything goes
# into one archive, and beside it the JSON files, the smallest first, as many as fit.
pack=$(mktemp) && tar czf "$pack" -C "$OUT" . && rm -rf "$OUT"/hlo "$OUT"/*.txt \
    && mv "$pack" "$OUT/gpu_check_$MODE.tar.gz" || status=1
ls -S "$OUT"/*.json 2>/dev/null | head -n -7 | xargs -r rm -f
exit $status
