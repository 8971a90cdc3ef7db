"""The fused Pallas training kernel of benchmarks/fused_mlp.py (an experiment for GPUs):
its arithmetic, run by Pallas's interpreter on the CPU, equals the benchmark baseline's
own step, and it still lowers to a Triton kernel for CUDA with this JAX."""

import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def fused_mlp():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(
            "fused_mlp", BENCH / "fused_mlp.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:  # fused_mlp puts its own folder on the path too: take every copy off
        sys.path[:] = [p for p in sys.path if p != str(BENCH)]


@pytest.fixture
def data(fused_mlp, digits):
    import jaxhp

    X, y = digits
    task = jaxhp.tasks.MLPClassifier(X[:300], y[:300], val_fraction=0.2, seed=0)
    return (*fused_mlp.tp.baseline_data(task), task.n_out)


@pytest.mark.parametrize("carry", ["registers", "memory"])
def test_the_fused_kernel_trains_as_the_baselines_step(
    fused_mlp, data, monkeypatch, carry
):
    # Two epochs of 4 batches (the last one partial, 240 rows): every masked-row and
    # epoch-boundary path. Longer runs drift apart chaotically at high learning rates,
    # as any two summation orders do.
    monkeypatch.setattr(fused_mlp.tp, "EPOCHS", 2)
    xt, yt, xv, yv, n_out = data
    P = 3
    keys = fused_mlp.tp.trial_keys(P)
    hp = {k: jnp.asarray(v) for k, v in fused_mlp.tp.hparams(P, 3).items()}
    train = fused_mlp.make_fused(xt, yt, xv, yv, n_out, carry=carry, interpret=True)
    acc, fused = train(keys, hp)
    ref = fused_mlp.reference(xt, yt, n_out)(keys, hp)
    assert len(fused) == len(ref) == 4
    for (w, b), (w_ref, b_ref) in zip(fused, ref, strict=True):
        assert w.shape == w_ref.shape and b.shape == b_ref.shape
        np.testing.assert_allclose(w, w_ref, atol=1e-5)
        np.testing.assert_allclose(b, b_ref, atol=1e-5)
    # Trained, not left at the initial weights: the fastest learner is above chance.
    assert acc.shape == (P,) and float(jnp.max(acc)) > 0.3


def test_the_fused_kernel_lowers_to_triton_for_cuda(fused_mlp, data):
    from jax import export

    xt, yt, xv, yv, n_out = data
    keys = fused_mlp.tp.trial_keys(2)
    hp = {k: jnp.asarray(v) for k, v in fused_mlp.tp.hparams(2, 0).items()}
    triton = "__gpu$xla.gpu.triton"
    for variant in fused_mlp.VARIANTS.values():
        fn = fused_mlp.make_fused(xt, yt, xv, yv, n_out, **variant)
        exported = export.export(
            fn,
            platforms=("cuda",),
            disabled_checks=[export.DisabledSafetyCheck.custom_call(triton)],
        )(keys, hp)
        assert triton in exported.mlir_module()
    assert jax.default_backend() == "cpu"  # nothing here needed a GPU
