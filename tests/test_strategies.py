import jax
import numpy as np
import pytest

import jaxhp
from jaxhp import Choice, Float, Int, Space
from jaxhp.strategies import STRATEGIES, make_strategy

SPACE = Space(lr=Float(1e-4, 1e-1, log=True), n=Int(1, 4), opt=Choice(["adam", "sgd"]))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_ask_gives_points_in_the_cube_deterministically(name):
    s = make_strategy(name, SPACE)
    st = s.init(jax.random.key(0))
    u1, st = s.ask(st, 5)
    u2, st = s.ask(st, 3)
    assert u1.shape == (5, 3) and u2.shape == (3, 3)
    assert ((u1 >= 0) & (u1 <= 1)).all() and ((u2 >= 0) & (u2 <= 1)).all()
    # Point i does not depend on how the asks were chunked.
    s2 = make_strategy(name, SPACE)
    u_all, _ = s2.ask(s2.init(jax.random.key(0)), 8)
    np.testing.assert_allclose(np.concatenate([u1, u2]), u_all)
    st = s.tell(st, u2, np.array([1.0, np.nan, 0.5]))  # NaN (failed) is accepted


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown strategy 'bayesian'"):
        make_strategy("bayesian", SPACE)


def test_sobol_is_more_even_than_random():
    space = Space(a=Float(0, 1), b=Float(0, 1))

    def worst_cell(name):
        s = make_strategy(name, space)
        u, _ = s.ask(s.init(jax.random.key(0)), 256)
        counts = np.histogram2d(u[:, 0], u[:, 1], bins=4, range=[[0, 1], [0, 1]])[0]
        return np.abs(counts - 16).max()

    assert worst_cell("sobol") < worst_cell("random")


def test_grid_visits_every_point_once():
    s = make_strategy("grid", SPACE, points=3)
    assert s.size == 3 * 3 * 2  # lr: 3, n: {1, 2, 4}, opt: 2
    u, st = s.ask(s.init(jax.random.key(1)), s.size)
    assert len({tuple(r) for r in np.round(u, 9)}) == s.size
    with pytest.raises(ValueError, match="cannot ask"):
        s.ask(st, 1)


def test_grid_larger_than_n_trials_says_so(clf_task, capsys):
    space = Space(
        learning_rate=Float(1e-3, 1e-2, log=True),
        epochs=Choice([1]),
        width=Choice([8]),
        n_layers=Choice([1]),
    )
    with pytest.raises(ValueError, match="the grid has 3 points but n_trials=5"):
        jaxhp.tune(clf_task, space, "grid", n_trials=5, strategy_options={"points": 3})
    res = jaxhp.tune(
        clf_task, space, "grid", n_trials=2, strategy_options={"points": 3}
    )
    assert (
        "the grid has 3 points; n_trials=2 runs a random 2" in capsys.readouterr().err
    )
    assert len(res) == 2
    full = jaxhp.tune(
        clf_task, space, "grid", n_trials=None, strategy_options={"points": 3}
    )
    assert sorted(t.params["learning_rate"] for t in full.trials) == pytest.approx(
        [1e-3, 10**-2.5, 1e-2]
    )


def test_random_and_sobol_need_n_trials(clf_task):
    with pytest.raises(
        ValueError, match="n_trials is required for the random strategy"
    ):
        jaxhp.tune(clf_task, Space(width=Choice([8])), "random")
