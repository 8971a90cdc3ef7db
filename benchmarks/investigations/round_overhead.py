"""What an engine round costs beyond its training: the epoch loop's form, the transfer of
the hyperparameters, against the hand-written baselines, side by side in one run.

The H200's profile (benchmarks/RESULTS.md) showed the engine's device time within a few
percent of ``vmap_val``'s while its rounds ran at 0.69x (P = 1) to 0.88x (P = 4096): the
rest is on the host. Two suspects, each an engine switch, timed here as arms on
throughput.py's reference MLP and hyperparameters:

  engine         the defaults (on an accelerator, a full stopper-free segment's epochs
                 are a loop of a fixed count: ``EngineOptions.static_epoch_loop``)
  engine_while   the epochs as a ``while_loop`` that ends once every trial is inactive:
                 its condition is read back to the host after every epoch
  engine_hp_put  the hyperparameters put on the device in one ``device_put`` per round
                 (``EngineOptions.hp_device_put``), instead of handed to each program call as
                 NumPy arrays (the default since this benchmark's first GPU run)
  engine_unpacked  each call's per-trial host arrays (hyperparameters, trial ids,
                 masks) as one array per leaf, instead of packed into one ``uint32``
                 matrix (``EngineOptions.pack_host_rows``): a dozen transfers per call, not one
  engine_scalar_loss  the MLP's step returning its loss summed over the batch, as
                 before 2026-11-29, instead of per-row terms that the engine sums once
                 per epoch: a reduction over the batch in every step
  engine_graphs  (GPU) the segment compiled with XLA's command buffers for its loops
                 (``EngineOptions.compiler_options``, ``GRAPHS`` below): the step loop
                 recorded as a CUDA graph and launched once, not kernel by kernel. An
                 arm that fails to compile or run is reported and left out.

Each engine arm's trials must reach the default's best values (``*_same_values``).
  vmap, vmap_val throughput.py's baselines (validation at the end / every epoch)

Best of ``--repeats`` interleaved rounds per arm (more for short rounds). Then the
initial-state program's call alone (its work is small: mostly dispatch and transfers),
packed against unpacked, the median of interleaved calls in microseconds. JSON
(``--out``) and a table of trials/s and ratios to ``vmap_val``:

    python benchmarks/investigations/round_overhead.py --populations 1 64 1024 4096
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

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
from jaxhp.engine.transfer import HostRows, host_rows  # noqa: E402
from jaxhp.tasks.mlp import MLPTrainable  # noqa: E402

GRAPHS = {
    "gpu": {
        "xla_gpu_enable_command_buffer": (
            "FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"
        )
    }
}


def engine_arm(task, hp, ids, *, static=None, hp_put=None, pack=None, options=None):
    """One engine round with the given EngineOptions fields (None: the platform's
    default)."""
    changes = {
        "static_epoch_loop": static,
        "hp_device_put": hp_put,
        "pack_host_rows": pack,
        "compiler_options": options.get(jax.default_backend(), {})
        if options is not None
        else None,
    }
    opts = engine.EngineOptions.for_platform(
        jax.default_backend(), **{k: v for k, v in changes.items() if v is not None}
    )

    def run():
        return engine.run_population(
            task,
            hp,
            ids,
            seed=0,
            bucketing="none",
            segment_epochs=tp.EPOCHS,
            options=opts,
        )[0]

    return run


@dataclasses.dataclass(frozen=True)
class ScalarLossMLP(MLPTrainable):
    """The built-in MLP with its step's loss reduced over the batch in the step."""

    loss_per_row = False

    def step(self, state, batch, hp):
        state, metrics = super().step(state, batch, hp)
        return state, {"loss": jnp.sum(metrics["loss"])}


def scalar_loss_task():
    """The benchmark's task, its trainables returning a scalar loss per step."""
    task, space, _ = tp.reference_task()
    make = task.trainable
    task.trainable = lambda hp: ScalarLossMLP(**dataclasses.asdict(make(hp)))
    task.check_space(space)
    return task


def init_call_us(task, hp, n_calls=200):
    """Median microseconds of one call of the bucket's initial-state program, its
    host arrays packed (``host_rows``) and unpacked, the calls interleaved."""
    options = engine.EngineOptions.for_platform(jax.default_backend())
    _, spec = bucket_spec(task, hp, tp.EPOCHS, None, options)
    comp = engine.DEFAULT_CACHE.get(spec, task.data.n_folds)
    p = len(hp["epochs"])
    tree = (np.arange(p, dtype=np.uint32), hp, np.ones(p, bool))
    packed = host_rows(tree)
    assert isinstance(packed, HostRows)
    forms = {"packed": packed, "unpacked": tree}
    times = {name: [] for name in forms}
    for form in forms.values():  # compile each form
        jax.block_until_ready(comp.init(np.uint32(0), form))
    for _ in range(n_calls):
        for name, form in forms.items():
            t0 = time.perf_counter()
            jax.block_until_ready(comp.init(np.uint32(0), form))
            times[name].append(time.perf_counter() - t0)
    return {f"init_call_{k}_us": float(np.median(v)) * 1e6 for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--populations", type=int, nargs="*", default=[1, 64, 1024])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    task, space, base = tp.reference_task()
    task_scalar = scalar_loss_task()
    vmap_train, vmap_val = (
        jax.jit(jax.vmap(base.train)),
        jax.jit(jax.vmap(base.train_val)),
    )
    result = run_header("round_overhead", rows=[])
    for P in args.populations:
        hp_np = tp.hparams(P, P)
        hp = task.hparams(space, hp_np)
        ids = np.arange(P)
        keys = tp.trial_keys(P)
        hp_dev = {k: jnp.asarray(v) for k, v in hp_np.items()}
        arms = {
            "engine": engine_arm(task, hp, ids),
            "engine_while": engine_arm(task, hp, ids, static=False),
            "engine_hp_put": engine_arm(task, hp, ids, hp_put=True),
            "engine_unpacked": engine_arm(task, hp, ids, pack=False),
            "engine_scalar_loss": engine_arm(task_scalar, hp, ids),
            "engine_graphs": engine_arm(task, hp, ids, options=GRAPHS),
            "vmap": lambda k=keys, h=hp_dev: vmap_train(k, h),
            "vmap_val": lambda k=keys, h=hp_dev: vmap_val(k, h),
        }
        row = {"population": P}
        values = {}
        for name, fn in list(arms.items()):  # compile
            t0 = time.perf_counter()
            try:
                out = jax.block_until_ready(fn())
            except Exception as e:  # an experimental arm the backend refuses
                row[f"{name}_error"] = f"{type(e).__name__}: {e}"[:500]
                del arms[name]
                continue
            row[f"{name}_first_s"] = time.perf_counter() - t0
            if name.startswith("engine"):
                values[name] = np.array([o.value for o in out])
        # A switch changes how a round runs, not what it computes: each engine arm's
        # trials reach the default's best values (a faster arm that does not is void).
        for name, v in values.items():
            row[f"{name}_same_values"] = bool(
                np.allclose(v, values["engine"], rtol=1e-5, equal_nan=True)
            )
        t0 = time.perf_counter()
        jax.block_until_ready(arms["vmap_val"]())
        one = time.perf_counter() - t0
        n_rep = max(args.repeats, min(20 * args.repeats, int(args.min_seconds / one)))
        row["repeats"] = n_rep
        for name, t in zip(
            arms, tp.best_times(list(arms.values()), n_rep), strict=True
        ):
            row[name] = P / t
            row[f"{name}_ms"] = t * 1e3
        for name in arms:
            row[f"{name}_vs_vmap_val"] = row[name] / row["vmap_val"]
        row.update(init_call_us(task, hp))
        result["rows"].append(row)
        tp.save_json(args.out, {**result, "partial": True})
        print(f"P={P}: {row}", file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))
    tp.save_json(args.out, result)
    names = list(
        dict.fromkeys(k[:-3] for r in result["rows"] for k in r if k.endswith("_ms"))
    )
    print(f"\n{'P':>6} " + " ".join(f"{a:>22}" for a in names))
    for row in result["rows"]:
        cells = [
            (
                f"{row[a]:11.0f} ({row[f'{a}_vs_vmap_val']:.2f}x)"
                if a in row
                else "failed"
            ).rjust(22)
            for a in names
        ]
        print(f"{row['population']:>6} " + " ".join(cells))
    print("trials/s (ratio to vmap_val)")
    for row in result["rows"]:
        for k, v in row.items():
            if k.endswith("_error"):
                print(f"P={row['population']}: {k[:-6]} failed: {v}")
            if k.endswith("_same_values") and not v:
                print(f"P={row['population']}: {k[:-12]} trained other values")
    for row in result["rows"]:
        print(
            f"P={row['population']}: initial-state call "
            f"{row['init_call_packed_us']:.0f} us packed, "
            f"{row['init_call_unpacked_us']:.0f} us unpacked"
        )
    return result


if __name__ == "__main__":
    main()
