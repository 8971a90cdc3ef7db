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
