"""The fused population step (fused_step.py, through fused_task's Trainable): in
Pallas's interpreter on the CPU it computes what ``jax.vmap`` of ``MLPTrainable.step``
computes, member by member, and the engine trains the same trials with it through the
Trainable's ``population_step``. The inputs are fused_step_check.py's, which runs the
same comparison on a GPU."""

import dataclasses

import fused_step
import jax
import numpy as np
import pytest
from conftest import load_script
from fused_task import FusedMLPClassifier, plain

import jaxhp


@pytest.fixture(scope="module")
def check():
    return load_script("fused_step_check")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("optimizers", ["sgd", "mixed"])
def test_the_fused_step_equals_the_vmapped_step(check, kind, dtype, optimizers):
    # Odd sizes (30 inputs, 3 outputs, 20-row batches: padded tiles), depth 3 with
    # trials of 1-3 layers, two short batches, an empty one and a frozen member; SGD
    # alone, or Adam, AdamW and SGD side by side (Adam's moments and count mid-run)
    # with dropout rates of 0 to 0.5 (the kernel draws the vmapped step's masks) and
    # ReLU, tanh, GELU and SiLU.
    tr, state, batch, hp, keep = check.one_step_inputs(kind, dtype, optimizers)
    args, step = tr.population_step(hp, keep, platform="cpu")
    new, loss = jax.jit(step)(*args, state, batch)
    ref, metrics = jax.jit(jax.vmap(plain(tr).step))(state, batch, hp)
    assert loss.shape == (check.M, check.B)
    # float32: the same arithmetic in another order. bfloat16: the vmapped step rounds
    # its activations and gradients to bf16 as well, the kernel keeps them in float32.
    tol = 2e-5 if dtype == "float32" else 3e-2
    live = check.trains(keep, batch)
    assert live.sum() == 4
    np.testing.assert_allclose(
        np.asarray(loss)[live], np.asarray(metrics["loss"])[live], rtol=tol, atol=tol
    )
    assert not np.asarray(loss)[~live].any()
    if optimizers == "mixed":  # Adam's step count: one more where a member trained
        np.testing.assert_array_equal(new.opt.count, np.where(live, 4, 3))
        np.testing.assert_array_equal(ref.opt.count[live], 4)
        # Dropout changed the step: without it, the members with a rate train otherwise.
        undropped_tr = dataclasses.replace(plain(tr), dropout=False)
        _, undropped = jax.jit(jax.vmap(undropped_tr.step))(state, batch, hp)
        rated = live & (np.asarray(hp["dropout"]) > 0)
        assert rated.sum() == 3
        gap = np.abs(np.asarray(undropped["loss"]) - np.asarray(metrics["loss"]))
        assert (gap.max(axis=1)[rated] > 1e-3).all()
    for got, want, old in zip(
        jax.tree.leaves((new.params, new.opt.mu, new.opt.nu)),
        jax.tree.leaves((ref.params, ref.opt.mu, ref.opt.nu)),
        jax.tree.leaves((state.params, state.opt.mu, state.opt.nu)),
        strict=True,
    ):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got[live], want[live], rtol=tol, atol=tol)
        # A member not trained (keep off, or no rows) is left bit for bit.
        np.testing.assert_array_equal(got[~live], old[~live])
    # No compute-dtype copy: the kernel casts the float32 weights in registers.
    assert state.low is None and new.low is None
    if kind == "classifier":  # the GPU check's own verdict on the same step agrees
        assert check.one_step(kind, dtype, optimizers, "cpu")["ok"]
    # Padded units stay exactly zero where the vmapped step keeps them so.
    for got, want in zip(
        jax.tree.leaves(new.params), jax.tree.leaves(ref.params), strict=True
    ):
        np.testing.assert_array_equal(got[live] == 0, want[live] == 0)


def test_the_engine_trains_the_same_trials_with_the_fused_step(small_digits):
    # Mixed optimizers, depths, widths (two buckets; the second layer its own), batch
    # sizes, epochs, dropout, activations and learning-rate schedules; 2-fold CV; a
    # learning rate that diverges; early stopping: every path of the engine's step loop.
    X, y = small_digits
    space = jaxhp.Space(
        learning_rate=jaxhp.Choice([0.01, 0.05, 0.2, 1e4]),
        momentum=jaxhp.Float(0.5, 0.9),
        optimizer=jaxhp.Choice(["adam", "adamw", "sgd"]),
        weight_decay=jaxhp.Float(1e-5, 1e-2, log=True),
        n_layers=jaxhp.Int(1, 3),
        width=jaxhp.Choice([16, 48]),
        width_1=jaxhp.Choice([8, 32]),  # the second layer's own width
        batch_size=jaxhp.Choice([24, 64]),
        epochs=jaxhp.Int(2, 5),
        dropout=jaxhp.Choice([0.0, 0.25]),
        activation=jaxhp.Choice(["relu", "tanh", "gelu", "silu"]),
        lr_schedule=jaxhp.Choice(["constant", "cosine", "linear"]),
        warmup=jaxhp.Choice([0.0, 0.3]),
    )
    runs = {}
    for kernel, cls in (
        ("xla", jaxhp.tasks.MLPClassifier),
        ("fused", FusedMLPClassifier),
    ):
        task = cls(X, y, folds=2)
        runs[kernel] = jaxhp.tune(
            task,
            space,
            "random",
            n_trials=12,
            population=12,
            seed=0,
            early_stopping=jaxhp.stopping.Patience(1),
        )
    xla, fz = runs["xla"].trials, runs["fused"].trials
    assert [t.status for t in fz] == [t.status for t in xla]
    assert {t.status for t in fz} >= {"complete", "diverged"}
    assert [t.epochs_run for t in fz] == [t.epochs_run for t in xla]
    # Where training is stable the values and training losses agree to float order
    # (the kernel takes tanh's, GELU's and SiLU's derivatives by formula, autodiff by
    # its rules; a validation row may tip: 0.0025 for one row of a fold's 200). At
    # learning rates of 0.2 and up (Adam's steps, losses above chance) float order is
    # amplified chaotically: 1% apart by the second epoch, and the value with it.
    stable = [t.params["learning_rate"] <= 0.05 for t in xla]
    assert sum(stable) >= 6
    gap = np.abs(
        np.subtract(
            [t.value for t, calm in zip(fz, stable, strict=True) if calm],
            [t.value for t, calm in zip(xla, stable, strict=True) if calm],
        )
    )
    assert np.median(gap) < 1e-6 and gap.max() <= 0.0051, gap
    for a, b, calm in zip(fz, xla, stable, strict=True):
        if calm:
            np.testing.assert_allclose(
                a.curves["train_loss"], b.curves["train_loss"], rtol=1e-4
            )
    np.testing.assert_allclose(
        runs["fused"].predict(X[:50]), runs["xla"].predict(X[:50]), atol=1e-4
    )


@pytest.mark.parametrize(
    "over,message",
    [
        ({"width": jaxhp.Int(16, 200)}, "width at most 128"),
        ({"n_layers": jaxhp.Fixed(2), "width_1": jaxhp.Int(16, 200)}, "at most 128"),
        ({"batch_size": jaxhp.Fixed(512)}, "batch_size at most 256"),
    ],
)
def test_what_the_fused_step_cannot_train_fails_before_compiling(
    small_digits, over, message
):
    X, y = small_digits
    task = FusedMLPClassifier(X, y)
    space = jaxhp.Space(learning_rate=jaxhp.Float(1e-3, 0.1, log=True), **over)
    with pytest.raises(ValueError, match=message):
        jaxhp.tune(task, space, n_trials=2)


def test_a_bucket_the_fused_step_cannot_train_fails_without_a_checked_space(
    small_digits,
):
    # run_population straight away: no space was checked, the bucket itself is vetted.
    from jaxhp.engine import run_population

    X, y = small_digits
    task = FusedMLPClassifier(X, y)
    hp = {k: np.asarray([v, v]) for k, v in task.defaults.items()}
    hp.update(epochs=np.asarray([1, 1]), optimizer=np.asarray([0, 2]))  # adam, sgd
    hp["activation"] = hp["lr_schedule"] = np.asarray([0, 0])  # relu, constant
    hp["width"] = np.asarray([200, 256])  # a bucket of width 256
    with pytest.raises(
        ValueError, match="the fused step takes width at most 128; this bucket"
    ):
        run_population(task, hp, np.arange(2), seed=0)
    # The kernel's activations are the MLP's, code for code.
    assert fused_step.ACTIVATIONS == jaxhp.tasks.mlp.ACTIVATIONS


def test_without_pallas_triton_the_interpreter_runs_and_a_gpu_says_why(
    check, monkeypatch
):
    # JAX deprecates Pallas's Triton backend. Where it is gone, the interpreter's
    # masked loads and stores fall back to selects, with the same result bit for bit,
    # and a GPU's fused step names the way out instead of failing on an import.
    tr, state, batch, hp, keep = check.one_step_inputs("regressor", "float32", "mixed")
    args, step = tr.population_step(hp, keep, platform="cpu")
    with_triton = jax.jit(step)(*args, state, batch)
    monkeypatch.setattr(fused_step, "_pltriton", lambda: None)
    args, step = tr.population_step(hp, keep, platform="cpu")
    without = jax.jit(step)(*args, state, batch)
    for a, b in zip(
        jax.tree.leaves(with_triton), jax.tree.leaves(without), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError, match="use jaxhp.tasks.MLPClassifier"):
        tr.population_step(hp, keep, platform="gpu")
