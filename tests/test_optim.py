import jax
import jax.numpy as jnp
import optax
import pytest

from jaxhp.optim import OPTIMIZERS, opt_init, opt_update


def reference(name, lr, wd, mom):
    if name == "adam":
        return optax.chain(optax.add_decayed_weights(wd), optax.adam(lr))
    if name == "adamw":
        return optax.adamw(lr, weight_decay=wd)
    return optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=mom))


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("kinds", [(0, 1, 2), None])
def test_fused_optimizer_matches_optax(name, kinds):
    code = OPTIMIZERS.index(name)
    kinds = kinds or (code,)
    lr, wd, mom = 0.05, 0.01, 0.8
    hp = {
        "optimizer": jnp.int32(code),
        "learning_rate": jnp.float32(lr),
        "weight_decay": jnp.float32(wd),
        "momentum": jnp.float32(mom),
    }
    params = {"w": jax.random.normal(jax.random.key(0), (4, 3)), "b": jnp.ones(3)}
    ref = reference(name, lr, wd, mom)
    ref_state, ours_state = ref.init(params), opt_init(params)
    p_ref = p_ours = params
    for i in range(5):
        g = jax.tree.map(lambda x, i=i: jnp.sin(x * (i + 1)), p_ref)
        upd, ref_state = ref.update(g, ref_state, p_ref)
        p_ref = optax.apply_updates(p_ref, upd)
        g2 = jax.tree.map(lambda x, i=i: jnp.sin(x * (i + 1)), p_ours)
        p_ours, ours_state = opt_update(g2, ours_state, p_ours, hp, kinds=kinds)
    jax.tree.map(
        lambda a, b: __import__("numpy").testing.assert_allclose(
            a, b, rtol=2e-5, atol=1e-6
        ),
        p_ours,
        p_ref,
    )


def test_lr_scale_follows_optax_schedules_and_warms_up():
    """Without warm-up the factor at update t is optax's schedule at count t - 1; with
    it, a linear ramp reaching 1 at the last warm-up update, then the decay over the
    rest."""
    import numpy as np

    from jaxhp.optim import SCHEDULES, lr_scale

    total, t = 50, jnp.arange(1, 51)

    def scale(name, warmup=0.0):
        hp = {
            "lr_schedule": jnp.full(50, SCHEDULES.index(name)),
            "warmup": jnp.full(50, warmup),
            "total_steps": jnp.full(50, float(total)),
        }
        return np.asarray(lr_scale(t, hp))

    s = np.arange(50)
    cosine = optax.cosine_decay_schedule(1.0, total)
    linear = optax.linear_schedule(1.0, 0.0, total)
    np.testing.assert_allclose(scale("cosine"), [cosine(i) for i in s], atol=1e-6)
    np.testing.assert_allclose(scale("linear"), [linear(i) for i in s], atol=1e-6)
    np.testing.assert_array_equal(scale("constant"), np.ones(50))
    warm = scale("cosine", 0.2)  # 10 warm-up updates, then a cosine over 40
    np.testing.assert_allclose(warm[:10], np.arange(1, 11) / 10, rtol=1e-6)
    after = optax.cosine_decay_schedule(1.0, 40)
    np.testing.assert_allclose(warm[10:], [after(i) for i in range(40)], atol=1e-6)
    np.testing.assert_allclose(scale("constant", 0.2)[9:], np.ones(41))
