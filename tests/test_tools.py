"""The benchmarks' HLO reader (benchmarks/investigations/hlo_diff.py): it counts what a compiled
program launches, loop bodies by their trip counts."""

import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(
    0, os.path.join(os.path.dirname(__file__), "..", "benchmarks", "investigations")
)

import hlo_diff  # noqa: E402


def _loop_texts(body, size):
    """The compiled HLO of ``fori_loop(0, steps, body)`` on a ``[size, size]`` matrix,
    for 3 and 12 trips: ``{steps: text}``."""
    w = jnp.ones((size, size), jnp.float32)
    texts = {}
    for steps in (3, 12):

        def f(w, x, steps=steps):
            return jax.lax.fori_loop(0, steps, lambda i, w: body(i, w, x, steps), w)

        texts[steps] = jax.jit(f).lower(w, w).compile().as_text()
    return texts


def test_the_estimate_counts_loop_bodies_by_their_trip_counts():
    texts = _loop_texts(lambda i, w, x, steps: jnp.tanh(w @ x) + jnp.sin(w) * i, 64)
    rates = {"bandwidth": 1e12, "matmul_rate": 1e13, "launch": 1e-6}
    est = {}
    for steps, text in texts.items():
        (loop,) = [b for b in hlo_diff.summarise(text) if b["launches"] > 0][:1]
        est[steps] = (hlo_diff.estimate(text, **rates), loop["launches"])
    (e3, body3), (e12, body12) = est[3], est[12]
    assert body3 == body12 > 0
    # Four times the trips: the body's kernels and time four times over, the rest alike.
    assert e12["kernels"] - e3["kernels"] == 9 * body3
    per_trip = (e12["est_ms"] - e3["est_ms"]) / 9
    assert per_trip >= body3 * rates["launch"] * 1e3 * 0.999
    # A kernel moving at least the 64x64 matmul's operands and result (48 kB).
    assert per_trip >= 3 * 64 * 64 * 4 / rates["bandwidth"] * 1e3 * 0.999
    assert np.isfinite(e3["est_ms"]) and e3["est_ms"] > 0


def test_a_conditional_counts_its_dearest_branch_once_a_call():
    """A loop whose body may take a costly branch (the engine's validation every
    ``eval_every`` epochs): each trip pays the cheap branch, the call the dear one once."""

    def body(i, w, x, steps):
        dear = lambda w: jnp.tanh(w @ x @ x @ x)  # noqa: E731
        return jax.lax.cond(i == steps - 1, dear, lambda w: w * 0.5, w)

    rates = {"bandwidth": 1e12, "matmul_rate": 1e11, "launch": 1e-6}
    est = {}
    for steps, text in _loop_texts(body, 256).items():
        assert " conditional(" in text
        est[steps] = hlo_diff.estimate(text, **rates)["est_ms"]
    three_matmuls_ms = 3 * 2 * 256**3 / rates["matmul_rate"] * 1e3
    assert est[3] >= three_matmuls_ms  # the dear branch, counted once
    assert est[12] - est[3] < three_matmuls_ms / 10  # not once a trip


def test_an_operand_passed_twice_is_read_once():
    a = jnp.ones((512, 512), jnp.float32)
    text = jax.jit(lambda a: a.T @ a).lower(a).compile().as_text()
    assert re.search(r"\bdot\((%[\w.\-]+), \1\)", text)  # the CPU's own dot(a, a)
    rates = {"bandwidth": 1e9, "matmul_rate": 1e18, "launch": 1e-12}
    ms = hlo_diff.estimate(text, **rates)["est_ms"]
    one_mb_ms = a.nbytes / rates["bandwidth"] * 1e3
    assert abs(ms - 2 * one_mb_ms) < 0.01 * one_mb_ms  # the result, and a once
