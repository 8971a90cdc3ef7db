"""Conditional parameters (``when=``): validation, the canonical point, what a trial
shows, grids, the GP's kernel, the bayes strategy, the MLP's own conditions, TOML."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhp
from jaxhp import Choice, Fixed, Float, Int, Space, SpaceError
from jaxhp import config as C
from jaxhp.gp import KernelParams, dims_of, kernel
from jaxhp.space import INACTIVE_AT
from jaxhp.storage import space_from_repr
from jaxhp.strategies import gp_bo

from .conftest import tiny_space

# c matters when a == "y" and b is 2 or 3; d when a == "x".
CHAIN = Space(
    a=Choice(["x", "y"]),
    b=Int(1, 3, when={"a": "y"}),
    c=Float(0.0, 1.0, when={"b": [2, 3]}),
    d=Float(1e-3, 1.0, log=True, when={"a": ["x"]}),
)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(m=Float(0, 1, when={"opt": "sgd"})),
            "m: when= names 'opt', which is not",
        ),
        (dict(m=Float(0, 1, when={"m": 1})), "m: when= names the parameter itself"),
        (
            dict(lr=Float(0, 1), m=Float(0, 1, when={"lr": 0.5})),
            "m: when= names 'lr', a Float",
        ),
        (
            dict(opt=Choice(["adam", "sgd"]), m=Float(0, 1, when={"opt": "sdg"})),
            r"m: when=\{'opt': 'sdg'\}: 'sdg' is not a value of opt",
        ),
        (
            dict(n=Int(1, 3), m=Float(0, 1, when={"n": [2, 4]})),
            "m: when=.*4 is not a value of n",
        ),
        (
            dict(a=Int(0, 1, when={"b": 1}), b=Int(0, 1, when={"a": 1})),
            r"a: its when= conditions form a cycle \(a -> b -> a\)",
        ),
        (dict(m=Float(0, 1, when="sgd")), "m: when= takes a non-empty mapping"),
        (dict(n=Int(1, 3), m=Float(0, 1, when={"n": []})), "m: when= takes"),
    ],
)
def test_invalid_conditions_name_the_parameter(kwargs, message):
    with pytest.raises(SpaceError, match=message):
        Space(**kwargs)


def test_reprs_without_conditions_are_unchanged():
    # A stored study checks repr(space): spaces without when= keep their old repr.
    assert repr(Float(1e-3, 0.1, log=True)) == "Float(low=0.001, high=0.1, log=True)"
    assert repr(Choice([32, 64])) == "Choice(values=(32, 64))"
    assert repr(Int(1, 3, when={"a": "y"})) == (
        "Int(low=1, high=3, log=False, when={'a': ['y']})"
    )
    assert Int(1, 3, when={"a": ["y"]}) == Int(1, 3, when={"a": "y"})
    # a stored study's space comes back from its repr, conditions included
    assert space_from_repr(repr(CHAIN)) == CHAIN


def test_active_follows_chains_and_canonical_moves_only_inactive_coordinates():
    u = np.random.default_rng(0).random((256, CHAIN.dim))
    vals = CHAIN.decode(u)
    act = CHAIN.active(vals)
    y = vals["a"] == 1
    np.testing.assert_array_equal(act["a"], True)
    np.testing.assert_array_equal(act["b"], y)
    np.testing.assert_array_equal(act["c"], y & np.isin(vals["b"], [2, 3]))
    np.testing.assert_array_equal(act["d"], ~y)
    c = CHAIN.canonical(u)
    for j, name in enumerate(CHAIN.searched):
        np.testing.assert_array_equal(
            c[:, j], np.where(act[name], u[:, j], INACTIVE_AT)
        )
    np.testing.assert_array_equal(CHAIN.canonical(c), c)  # idempotent
    assert all(0 < act[n].mean() < 1 for n in ("b", "c", "d"))


def test_params_leave_out_what_a_trial_does_not_use():
    rows = CHAIN.to_python_all(CHAIN.decode(np.array([[0.9, 0.5, 0.3, 0.1]])))
    assert rows == [{"a": "y", "b": 2, "c": 0.3}]
    rows = CHAIN.to_python_all(CHAIN.decode(np.array([[0.1, 0.9, 0.3, 0.0]])))
    assert rows == [{"a": "x", "d": 0.001}]
    # from_python takes them back, filling what is left out; a used one is required
    back = CHAIN.from_python([{"a": "x", "d": 0.001}, {"a": "y", "b": 1}])
    assert back["a"].tolist() == [0, 1] and back["b"].tolist()[1] == 1
    with pytest.raises(SpaceError, match="c: missing from configuration .* matters"):
        CHAIN.from_python([{"a": "y", "b": 3}])


def test_a_grid_runs_each_configuration_once():
    plain = Space(opt=Choice(["adam", "adamw", "sgd"]), m=Float(0.5, 0.9))
    cond = Space(
        opt=Choice(["adam", "adamw", "sgd"]), m=Float(0.5, 0.9, when={"opt": "sgd"})
    )
    assert plain.grid_size(4) == 12
    assert cond.grid_size(4) == 2 + 4  # adam, adamw once; sgd with 4 momenta
    rows = cond.to_python_all(cond.grid(4))
    assert rows[:2] == [{"opt": "adam"}, {"opt": "adamw"}]
    assert [r["m"] for r in rows[2:]] == pytest.approx([0.5, 0.6333333, 0.7666667, 0.9])
    # CHAIN: a=x with 3 d values, a=y with b=1, and b=2, 3 with 3 c values each
    assert CHAIN.grid_size(3) == 3 + 1 + 2 * 3


def test_the_kernel_ignores_inactive_coordinates():
    dims = dims_of(CHAIN)
    p = KernelParams(jnp.zeros(4) - 1.0, jnp.asarray(0.0), jnp.asarray(-6.0))
    x = jnp.asarray([0.9, 0.5, 0.3, 0.2])  # a=y, b=2, c=0.3 (d inactive)
    moved_d = x.at[3].set(0.95)
    moved_c = x.at[2].set(0.95)
    assert float(kernel(dims, p, x, moved_d)) == pytest.approx(1.0)
    assert float(kernel(dims, p, x, moved_c)) < 0.9
    b1 = x.at[1].set(0.1)  # b=1: c inactive too, so c's coordinate stops counting
    assert float(kernel(dims, p, b1, b1.at[2].set(0.95))) == pytest.approx(1.0)
    # a Fixed parent with another value: never active
    fixed = Space(opt=Fixed("adam"), m=Float(0, 1, when={"opt": "sgd"}), lr=Float(0, 1))
    dims = dims_of(fixed)
    q = KernelParams(jnp.zeros(2) - 1.0, jnp.asarray(0.0), jnp.asarray(-6.0))
    a = jnp.asarray([0.1, 0.5])
    assert float(kernel(dims, q, a, a.at[0].set(0.9))) == pytest.approx(1.0)
    assert not fixed.active(fixed.decode(np.array([[0.1, 0.5]])))["m"].any()


def test_bayes_proposes_canonical_distinct_configurations():
    strat = gp_bo(CHAIN, n_initial=8)
    state = strat.init(jax.random.key(0))
    seen = set()
    for rnd in range(3):
        u, state = strat.ask(state, 8)
        np.testing.assert_array_equal(CHAIN.canonical(u), u)
        rows = CHAIN.to_python_all(CHAIN.decode(u))
        keys = {tuple(sorted(r.items())) for r in rows}
        if rnd:  # the GP's batches (the random design may repeat a configuration)
            assert len(keys) == 8 and not keys & seen
        seen |= keys
        y = np.asarray(
            [r.get("c", 0.0) + r.get("b", 0) + r.get("d", 0.5) for r in rows]
        )
        state = strat.tell(state, u, y)
    assert len(state.pending) == 0  # every told point left the pending list


def test_mlp_conditions_and_a_sweep_that_uses_them(clf_task):
    space = tiny_space(
        n_layers=Int(1, 3),
        width_0=Int(4, 8),
        width_1=Int(4, 8),
        width_2=Int(4, 8),
        width=Fixed(6),
        optimizer=Choice(["adam", "sgd"]),
        momentum=Float(0.5, 0.9),
        epochs=Fixed(2),
    )
    cond = clf_task.conditions(space)
    assert cond == {
        "momentum": {"optimizer": ["sgd"]},
        "width_1": {"n_layers": [2, 3]},
        "width_2": {"n_layers": [3]},
    }
    # width follows n_layers only for layers without their own width_<i>
    two = tiny_space(n_layers=Int(1, 3), width_0=Int(4, 8), width=Int(4, 8))
    assert clf_task.conditions(two)["width"] == {"n_layers": [2, 3]}
    # with Adam fixed, momentum never matters; without SGD among the choices it is
    # left alone (a condition cannot name a value the parent does not have)
    adam = tiny_space(optimizer=Fixed("adam"), momentum=Float(0.5, 0.9))
    assert (
        not adam.with_conditions(clf_task.conditions(adam))
        .active(adam.decode(np.full((3, adam.dim), 0.3)))["momentum"]
        .any()
    )
    no_sgd = tiny_space(optimizer=Choice(["adam", "adamw"]), momentum=Float(0.5, 0.9))
    assert "momentum" not in clf_task.conditions(no_sgd)
    # a condition the user wrote is kept
    mine = tiny_space(
        optimizer=Choice(["adam", "sgd"]),
        momentum=Float(0.5, 0.9, when={"optimizer": ["adam", "sgd"]}),
    )
    assert mine.with_conditions(clf_task.conditions(mine)) is mine
    res = jaxhp.tune(clf_task, space, "random", n_trials=12, population=12, seed=0)
    for t in res.trials:
        p = t.params
        assert ("momentum" in p) == (p["optimizer"] == "sgd")
        for i in range(3):
            assert (f"width_{i}" in p) == (i < p["n_layers"])
    head, _, *rows = res.table(None).splitlines()
    col = head.split().index("momentum")
    opt = head.split().index("optimizer")
    for row in rows:  # a trial that does not use momentum shows "-"
        cells = row.split()
        assert (cells[col] == "-") == (cells[opt] != "sgd")
    df = res.to_pandas()
    assert list(df.columns[: len(space)]) == list(space)
    assert df["momentum"].isna().sum() == sum(
        t.params["optimizer"] != "sgd" for t in res.trials
    )


def test_toml_when():
    p = C._param("momentum", {"float": [0.5, 0.99], "when": {"optimizer": "sgd"}})
    assert p == Float(0.5, 0.99, when={"optimizer": "sgd"})
    p = C._param("width_1", {"int": [8, 64], "log": True, "when": {"n_layers": [2, 3]}})
    assert p.when == (("n_layers", (2, 3)),)
    with pytest.raises(C.ConfigError, match="space.x: a fixed value takes no when"):
        C._param("x", {"fixed": 1, "when": {"a": 1}})
    with pytest.raises(C.ConfigError, match="space.x.when: expected a table"):
        C._param("x", {"float": [0, 1], "when": "sgd"})
