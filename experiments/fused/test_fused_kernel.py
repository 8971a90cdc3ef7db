"""The fused Pallas training kernel of fused_mlp.py (an experiment for GPUs):
its arithmetic, run by Pallas's interpreter on the CPU, equals the benchmark baseline's
own step, and it still lowers to a Triton kernel for CUDA with this JAX."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def fused_mlp():
    return load_script("fused_mlp")


@pytest.fixture
def data(fused_mlp, digits):
    import jaxhp

    X, y = digits
    task = jaxhp.tasks.MLPClassifier(X[:300], y[:300], val_fraction=0.2, seed=0)
    return (*fused_mlp.tp.baseline_data(task), task.n_out)


@pytest.mark.parametrize("carry", ["registers", "split", "memory", "stash", "per_step"])
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


# Real ptxas -v and cuobjdump -sass output (the w4 kernel, compiled for an H200 without
# one by `fused_mlp.py --resources h200`), trimmed.
PTXAS_REPORT = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_kernel' for 'sm_90a'
ptxas info    : Function properties for _kernel
    2352 bytes stack frame, 3380 bytes spill stores, 3340 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 2352 bytes cumulative stack size
ptxas info    : Compile time = 1593.820 ms
"""
SASS = """\
        /*01c0*/                   STL [R1+0x6e0], R95 ;   /* 0x0006e05f01007387 */
        /*06e0*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;   /* 0x0000000000007b1d */
        /*4aa0*/              @!P5 IMAD.IADD.U32 R56, R56, 0x1, R2.reuse ;   /* 0x0 */
        /*4ac0*/              @!P4 IMAD.IADD.U32 R57, R57, 0x1, R2 ;   /* 0x0 */
        /*5010*/                   HGMMA.64x64x8.F32.TF32 R24, gdesc[UR4], RZ, !UPT ;
        /*5020*/               @P0 LDL.64 R2, [R1+0x10] ;   /* 0x0 */
"""


def test_the_resource_report_reads_ptxas_and_the_sass(fused_mlp):
    assert fused_mlp.parse_ptxas(PTXAS_REPORT) == {
        "registers": 255,
        "stack_bytes": 2352,
        "spill_store_bytes": 3380,
        "spill_load_bytes": 3340,
    }
    mix = fused_mlp.sass_mix(SASS)
    assert mix["instructions"] == 6  # predicated ones counted by their opcode
    counts = {k: mix[k] for k in ("STL", "LDL", "BAR", "HGMMA", "LDG")}
    assert counts == {"STL": 1, "LDL": 1, "BAR": 1, "HGMMA": 1, "LDG": 0}
    with pytest.raises(ValueError, match="no ptxas resource report"):
        fused_mlp.parse_ptxas("ptxas fatal : Unresolved extern function")
    # 255 registers round up to 256: a 4-warp program takes 32,768 of an SM's 65,536.
    assert fused_mlp.programs_per_sm(255, 4) == 2
    assert fused_mlp.programs_per_sm(255, 8) == 1
    assert fused_mlp.programs_per_sm(128, 4) == 4
    assert fused_mlp.programs_per_sm(100, 4) == 4  # 104 a thread: 13,312 a program
