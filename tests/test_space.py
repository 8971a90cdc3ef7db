import numpy as np
import pytest

import jaxhp
from jaxhp import Choice, Fixed, Float, Int, Space, SpaceError


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=Float(1e-1, 1e-4)), "lr: empty or reversed range"),
        (dict(lr=Float(0.1, 0.1)), "lr: empty or reversed range"),
        (dict(lr=Float(0.0, 1.0, log=True)), "lr: log=True needs positive bounds"),
        (dict(n=Int(-1, 5, log=True)), "n: log=True needs positive bounds"),
        (dict(n=Int(1.5, 5)), "n: Int bounds must be integers"),
        (dict(n=Int(5, 5)), "n: empty or reversed range"),
        (dict(opt=Choice(["adam", "adam"])), "opt: duplicate choice 'adam'"),
        (dict(opt=Choice([])), "opt: Choice needs at least one value"),
        (dict(opt=Choice([1, "a"])), "opt: Choice mixes value types"),
        (dict(lr=0.1), "lr: expected Float, Int, Choice or Fixed"),
        (dict(lr=Float(float("nan"), 1.0)), "lr: Float bounds must be finite"),
    ],
)
def test_invalid_spaces_name_the_parameter(kwargs, message):
    with pytest.raises(SpaceError, match=message):
        Space(**kwargs)


def test_empty_space_and_choice_of_string():
    with pytest.raises(SpaceError, match="empty"):
        Space()
    with pytest.raises(SpaceError, match="takes a list"):
        Choice("adam")


def test_unknown_keyword_for_the_task_names_it(clf_task):
    with pytest.raises(
        SpaceError, match="lerning_rate: MLPClassifier has no hyperparameter"
    ):
        jaxhp.tune(clf_task, Space(lerning_rate=Float(1e-3, 1e-1)), n_trials=1)


def test_out_of_range_and_unknown_choice_for_the_task(clf_task):
    with pytest.raises(SpaceError, match="dropout: values must lie in"):
        jaxhp.tune(clf_task, Space(dropout=Float(0.0, 1.5)), n_trials=1)
    with pytest.raises(SpaceError, match="optimizer: unknown value 'rmsprop'"):
        jaxhp.tune(clf_task, Space(optimizer=Choice(["adam", "rmsprop"])), n_trials=1)
    with pytest.raises(SpaceError, match="n_layers: must be an integer"):
        jaxhp.tune(clf_task, Space(n_layers=Float(1, 3)), n_trials=1)


def test_decode_encode_round_trip_and_bounds():
    space = Space(
        lr=Float(1e-4, 1e-1, log=True),
        n=Int(1, 5),
        w=Int(16, 512, log=True),
        opt=Choice(["adam", "sgd"]),
        b=Choice([32, 64, 128]),
        f=Fixed(3),
    )
    assert space.dim == 5
    u = np.random.default_rng(0).random((1000, 5))
    v = space.decode(u)
    assert v["lr"].min() >= 1e-4 and v["lr"].max() <= 1e-1
    assert set(np.unique(v["n"])) == {1, 2, 3, 4, 5}
    assert v["w"].min() >= 16 and v["w"].max() <= 512
    assert set(np.unique(v["b"])) == {32, 64, 128}
    assert (v["f"] == 3).all()
    again = space.decode(space.encode(v))
    for k in v:
        np.testing.assert_allclose(again[k], v[k], rtol=1e-9)
    cfg = space.to_python(v, 0)
    assert isinstance(cfg["n"], int) and isinstance(cfg["lr"], float)
    assert cfg["opt"] in ("adam", "sgd") and isinstance(cfg["b"], int) and cfg["f"] == 3
    # The whole population at once gives the same values, of the same types.
    each = [space.to_python(v, i) for i in range(len(u))]
    assert [
        [(k, type(x), x) for k, x in c.items()] for c in space.to_python_all(v)
    ] == [[(k, type(x), x) for k, x in c.items()] for c in each]
    mixed = Space(m=Choice([0.5, 2.0]), s=Fixed("sgd"), i=Choice([1, 2]))
    vm = mixed.decode(u[:50, :2])
    assert mixed.to_python_all(vm) == [mixed.to_python(vm, i) for i in range(50)]


def test_log_uniform_is_uniform_in_log_space():
    space = Space(lr=Float(1e-4, 1e0, log=True))
    v = space.decode(np.random.default_rng(1).random((20000, 1)))["lr"]
    counts, _ = np.histogram(np.log10(v), bins=4, range=(-4, 0))
    assert counts.min() > 0.9 * counts.max()


def test_int_bins_are_equally_likely():
    v = Space(n=Int(1, 4)).decode(np.random.default_rng(2).random((40000, 1)))["n"]
    counts = np.bincount(v)[1:]
    assert counts.min() > 0.95 * counts.max()


def test_grid_is_complete_and_exact():
    space = Space(
        lr=Float(1e-4, 1e-2, log=True),
        n=Int(1, 3),
        opt=Choice(["adam", "sgd"]),
        f=Fixed(1),
    )
    g = space.grid(3)
    configs = {
        (space.to_python(g, i)["lr"], int(g["n"][i]), int(g["opt"][i]))
        for i in range(18)
    }
    assert space.grid_size(3) == 18 and len(configs) == 18
    assert {c[0] for c in configs} == {1e-4, 1e-3, 1e-2}
    explicit = space.grid({"lr": [3e-4, 3e-3], "n": 2})
    assert sorted(set(explicit["lr"].tolist())) == [3e-4, 3e-3]
    assert sorted(set(explicit["n"].tolist())) == [1, 3]
    with pytest.raises(SpaceError, match="lr: grid value 1.0 is outside"):
        space.grid({"lr": [1.0]})
    with pytest.raises(SpaceError, match="unknown"):
        space.grid({"nope": 2})
