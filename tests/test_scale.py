"""Several devices, memory-aware chunking: same trials, same results."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxhp
from jaxhp.engine import EngineOptions, ProgramCache, run_population

from .conftest import tiny_space


def _hp(task, space, n, seed=0):
    u = np.random.default_rng(seed).random((n, space.dim))
    return task.hparams(space, space.decode(u))


def _same(a, b):
    assert [o.trial_id for o in a] == [o.trial_id for o in b]
    for x, y in zip(a, b, strict=True):
        assert x.status == y.status and x.epochs_run == y.epochs_run
        np.testing.assert_allclose(x.value, y.value, rtol=1e-5, atol=1e-6)
        for k in x.curves:
            np.testing.assert_allclose(x.curves[k], y.curves[k], rtol=1e-4, atol=1e-5)


def test_chunked_equals_unchunked(clf_task):
    space = tiny_space(width=jaxhp.Fixed(16), batch_size=jaxhp.Fixed(32))
    clf_task.check_space(space)
    hp = _hp(clf_task, space, 24)
    ids = np.arange(24)
    whole, rep_whole, best_whole = run_population(clf_task, hp, ids, seed=1)
    # A budget that holds a few trials (the fixed part is the data and the program).
    cache = ProgramCache()
    run_population(clf_task, hp, ids, seed=1, memory_budget=1 << 40, cache=cache)
    (fixed, per_trial), *_ = cache.memory.values()
    budget = int(fixed + 5.5 * per_trial)
    parts, rep, best = run_population(clf_task, hp, ids, seed=1, memory_budget=budget)
    assert {r.chunk for r in rep} == {4}  # 5 fit, the largest power of two is 4
    assert sum(r.trials for r in rep) == 24 and len(rep) == 6
    assert max(r.padded for r in rep) == 4
    _same(whole, parts)
    assert best.trial_id == best_whole.trial_id
    # Too small for one trial: a clear error before anything trains.
    try:
        run_population(clf_task, hp, ids, seed=1, memory_budget=int(fixed // 2))
    except MemoryError as e:
        assert "cannot hold even one trial" in str(e)
    else:
        raise AssertionError("expected a MemoryError")


def test_a_cpu_trains_a_large_bucket_in_cache_sized_chunks(clf_task):
    space = tiny_space(width=jaxhp.Fixed(16), batch_size=jaxhp.Fixed(32))
    clf_task.check_space(space)
    hp = _hp(clf_task, space, 14, seed=2)
    ids = np.arange(14)
    cache = ProgramCache()  # this test's programs alone
    all_fit = EngineOptions.for_platform("cpu", cpu_chunk_bytes_per_core=1 << 40)
    whole, rep_whole, best_whole = run_population(
        clf_task, hp, ids, seed=2, options=all_fit, cache=cache
    )
    assert [(r.padded, r.chunk) for r in rep_whole] == [(16, None)]
    # A cache too small for one trial's state: chunks of the floor, CPU_MIN_MEMBERS; the
    # short last chunk is padded to the chunk and reuses its program.
    tiny = EngineOptions.for_platform("cpu", cpu_chunk_bytes_per_core=1)
    parts, rep, best = run_population(
        clf_task, hp, ids, seed=2, options=tiny, cache=cache
    )
    assert [(r.trials, r.padded, r.chunk) for r in rep] == [(4, 4, 4)] * 3 + [(2, 4, 4)]
    assert [r.part for r in rep] == [0, 1, 2, 3]
    assert sum(r.compile_time > 0 for r in rep) <= 1
    _same(whole, parts)
    assert best.trial_id == best_whole.trial_id
    # The per-trial state the chunk was sized from (weights, optimizer state, best
    # copy, curves of a width-16 MLP): kilobytes, remembered by the bucket's programs.
    (comp,) = [c for c in cache.programs.values() if c.state_bytes]
    assert all(1e3 < b < 1e6 for b in comp.state_bytes.values()), comp.state_bytes
    # Sized afresh under a seed past 32 bits (the engine's keys take it modulo 2**32).
    comp.state_bytes.clear()
    _, rep, _ = run_population(
        clf_task, hp, ids, seed=2**40 + 2, options=tiny, cache=cache
    )
    assert [r.chunk for r in rep] == [4] * 4 and len(comp.state_bytes) == 1
    # A per-trial stopper keeps the chunks; one that compares the trials of a
    # population with each other keeps the whole bucket (its comparison set).
    per_trial = jaxhp.stopping.Patience(2) | jaxhp.stopping.Threshold(lower=0.0)
    _, rep, _ = run_population(
        clf_task, hp, ids, seed=2, stopper=per_trial, options=tiny, cache=cache
    )
    assert [r.chunk for r in rep] == [4] * 4
    for stopper in (
        jaxhp.stopping.Median(),
        jaxhp.stopping.Patience(2) | jaxhp.stopping.ASHA(1, 2),
    ):
        _, rep, _ = run_population(
            clf_task, hp, ids, seed=2, stopper=stopper, options=tiny, cache=cache
        )
        assert [(r.padded, r.chunk) for r in rep] == [(16, None)]


def test_the_cpu_chunk_rule(monkeypatch):
    from jaxhp.engine import memory

    monkeypatch.setattr(memory, "usable_cores", lambda: 1)
    state = {"bytes": 64 << 10}
    cpu = EngineOptions.for_platform("cpu")

    def chunk(n_dev=1, n_folds=1):
        return memory.cpu_chunk(state["bytes"], cpu, n_dev, n_folds)

    # Two cores' worth at least (one usable here): 2 MiB of 64 kB trials.
    assert chunk() == 32
    assert chunk(n_dev=4) == 32  # 8 per device
    state["bytes"] = 600 << 10  # 3.4 fit, so 2; the floor of 4 members raises one fold
    assert chunk() == 4 and chunk(n_folds=2) == 2
    state["bytes"] = 1 << 40  # none fits: the floor of 4 members (trial x fold)
    assert [chunk(n_folds=f) for f in (1, 2, 3, 5)] == [4, 2, 1, 1]
    assert chunk(n_dev=2) == 8  # per device


def test_population_far_larger_than_the_budget_completes(clf_task):
    space = tiny_space(width=jaxhp.Fixed(8), batch_size=jaxhp.Fixed(64))
    clf_task.check_space(space)
    hp = _hp(clf_task, space, 8)
    cache = ProgramCache()
    run_population(
        clf_task, hp, np.arange(8), seed=0, memory_budget=1 << 40, cache=cache
    )
    fixed, per_trial = list(cache.memory.values())[-1]
    res = jaxhp.tune(
        clf_task,
        space,
        "random",
        n_trials=64,
        population=64,
        memory_budget=int(fixed + 2 * per_trial),
    )
    assert len(res) == 64 and res.stats["chunks"] == [2]


SHARDED = r"""
import dataclasses, json, sys
import numpy as np, jax, jax.numpy as jnp
import jaxhp
from jaxhp.tasks.mlp import MLPTrainable
from sklearn.datasets import load_digits


@dataclasses.dataclass(frozen=True)
class PopulationStepped(MLPTrainable):
    # A Trainable that steps all members itself (Trainable.population_step): here the
    # vmapped step, leaving a member that does not train as it was.
    def population_step(self, hp, keep, *, platform):
        def step(hp, keep, states, batch):
            new, metrics = jax.vmap(self.step)(states, batch, hp)
            live = keep & (batch.count > 0)
            new = jax.tree.map(
                lambda n, o: jnp.where(live.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
                new, states,
            )
            return new, jnp.where(live[:, None], metrics["loss"], 0.0)

        return (hp, keep), step


class Task(jaxhp.tasks.MLPClassifier):
    def trainable(self, hp):
        tr = super().trainable(hp)
        if sys.argv[1] != "population_step":
            return tr
        fields = dataclasses.fields(tr)
        return PopulationStepped(**{f.name: getattr(tr, f.name) for f in fields})


X, y = load_digits(return_X_y=True)
task = Task(X[:300], y[:300], val_fraction=0.25, seed=0)
wrapped = []  # steps put under shard_map (a population_step over several devices)
from jaxhp.engine import segment
shard = segment.shard_members
segment.shard_members = lambda *a: wrapped.append(1) or shard(*a)
space = jaxhp.Space(
    learning_rate=jaxhp.Float(1e-3, 3e-2, log=True), width=jaxhp.Choice([8, 16]),
    batch_size=jaxhp.Choice([32, 64]), epochs=jaxhp.Int(2, 4),
)
out = {}
for name, devices in (("one", jax.devices()[:1]), ("all", None)):
    res = jaxhp.tune(task, space, "sobol", n_trials=12, population=12, seed=0,
                     devices=devices)
    out[name] = {"devices": res.stats["devices"], "shard_mapped": len(wrapped),
                 "trials": [[t.trial_id, t.value, t.status, t.epochs_run,
                             t.curves["train_loss"].tolist()] for t in res.trials]}
print(json.dumps(out))
"""


# A Trainable's population_step runs under shard_map: each device steps its own
# members (experiments/fused's Pallas step is one such Trainable).
@pytest.mark.parametrize("step", ["vmap", "population_step"])
def test_sharded_over_four_devices_equals_one_device(step):
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
    )
    out = subprocess.run(
        [sys.executable, "-c", SHARDED, step],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["one"]["devices"] == 1 and res["all"]["devices"] == 4
    assert res["one"]["shard_mapped"] == 0
    assert (res["all"]["shard_mapped"] > 0) == (step == "population_step")
    for a, b in zip(res["one"]["trials"], res["all"]["trials"], strict=True):
        assert a[0] == b[0] and a[2] == b[2] and a[3] == b[3]
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5)
        np.testing.assert_allclose(a[4], b[4], rtol=1e-4)


MULTIHOST = r"""
import json, os, sys
import jaxhp
jaxhp.distributed.initialize()  # from the JAXHP_* variables
import jax
import numpy as np
from sklearn.datasets import load_digits
X, y = load_digits(return_X_y=True)
task = jaxhp.tasks.MLPClassifier(X[:300], y[:300], val_fraction=0.25, seed=0)
space = jaxhp.Space(
    learning_rate=jaxhp.Float(1e-3, 3e-2, log=True), width=jaxhp.Choice([8, 16]),
    batch_size=jaxhp.Choice([32, 64]), epochs=jaxhp.Int(2, 4),
)
res = jaxhp.tune(task, space, "bayes", n_trials=12, population=6, seed=0,
                 storage=sys.argv[1])
print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                  "devices": res.stats["devices"],
                  "trials": [[t.trial_id, t.params, t.value, t.status, t.epochs_run]
                             for t in res.trials]}))
"""


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_jax_distributed_equal_one(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    one = subprocess.run(
        [sys.executable, "-c", MULTIHOST, str(tmp_path / "one.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MULTIHOST, str(tmp_path / "two.db")],
            env=dict(
                env,
                JAXHP_COORDINATOR=f"127.0.0.1:{port}",
                JAXHP_NUM_PROCESSES="2",
                JAXHP_PROCESS_ID=str(i),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    ref = json.loads(one.stdout.strip().splitlines()[-1])
    got = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert [g["processes"] for g in got] == [2, 2] and got[0]["devices"] == 2
    for g in got:  # both processes hold the whole study, equal to one process's
        assert len(g["trials"]) == len(ref["trials"]) == 12
        for a, b in zip(ref["trials"], g["trials"], strict=True):
            assert a[0] == b[0] and a[1] == b[1] and a[3:] == b[3:]
            np.testing.assert_allclose(a[2], b[2], rtol=1e-5)
    # Only process 0 wrote the study.
    assert len(jaxhp.load(tmp_path / "two.db")) == 12
