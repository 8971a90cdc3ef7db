#!/usr/bin/env bash
# The device check for a lent GPU: one command, a few minutes, JSON under $OUT.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# 1. smoke: the backend is a GPU; a small sweep (every strategy, k-fold, early stopping,
#    a diverging trial, several buckets) runs and gives sane results on it; a run
#    sharded over every local GPU equals a one-GPU run when there are several.
# 2. throughput: benchmarks/throughput.py at P = 1 ... 16384 (engine vs plain vmap and
#    vmap_val, achieved TFLOP/s), capped at 150 s.
# 3. proposal cost: benchmarks/proposal_cost.py at n = 1000, d = 6, q = 64 and 1024.
# Runs from the checkout (no install): the device image already has jax, flax, optax,
# chex and scikit-learn.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

timeout 120 python - > "$OUT/smoke.json" <<'PY' || status=1
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
ok = out["backend"] == "gpu" and all(out[s]["best"] > 0.9 for s in ("random", "sobol", "bayes"))
if len(jax.devices()) > 1:
    one = jaxhp.tune(task, space, "sobol", n_trials=32, population=32, devices=jax.devices()[:1])
    many = jaxhp.tune(task, space, "sobol", n_trials=32, population=32)
    out["sharded_equals_one"] = bool(np.allclose(
        [t.value for t in one.trials], [t.value for t in many.trials], equal_nan=True, rtol=1e-4))
    ok = ok and out["sharded_equals_one"]
out["ok"] = bool(ok)
print(json.dumps(out, indent=1))
PY

timeout 150 python benchmarks/throughput.py --populations 1 64 1024 4096 16384 \
    --repeats 3 --min-seconds 1 --out "$OUT/throughput.json" > "$OUT/throughput.txt" 2>&1 || status=1
timeout 90 python benchmarks/proposal_cost.py --n 1000 --d 6 --q 64 1024 \
    --out "$OUT/proposal_cost.json" > "$OUT/proposal_cost.txt" 2>&1 || status=1
cat "$OUT"/*.txt 2>/dev/null | tail -40
exit $status
