"""Studies are data: reading one runs no code, readers cannot write, a study made from a
Trainable in a script's ``__main__`` opens elsewhere, bad input fails in one line before
anything trains, and a recycled stream with storage survives a kill."""

import json
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import jaxhp
from jaxhp import config as C
from jaxhp.cli import main
from jaxhp.storage import SCHEMA_VERSION, StorageError, Study, load
from jaxhp.tasks.data import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)

TINY = {
    "data": {"dataset": "iris"},
    "task": {"kind": "classifier", "val_fraction": 0.3},
    "search": {"strategy": "bayes", "n_trials": 4, "population": 2, "seed": 0},
    "study": {"storage": "s.db", "name": "iris"},
    "space": {
        "learning_rate": {"float": [1e-3, 0.3], "log": True},
        "width": 8,
        "batch_size": 32,
        "epochs": 2,
    },
}


def _tiny_study(tmp_path, name="s.db", **search):
    cfg = json.loads(json.dumps(TINY))
    cfg["study"]["storage"] = str(tmp_path / name)
    cfg["search"].update(search)
    path = tmp_path / f"{name}.toml"
    path.write_text(C.dumps(cfg))
    assert main(["tune", str(path), "--quiet"]) == 0
    return str(tmp_path / name), str(path)


@pytest.fixture(scope="module")
def study_db(tmp_path_factory):
    """A finished tiny study (every reader's subject) and rows to predict."""
    tmp = tmp_path_factory.mktemp("study")
    db, _ = _tiny_study(tmp)
    X, _ = C.load_data(C.parse(TINY))
    np.savez(tmp / "rows.npz", X=X[:3])
    return db, str(tmp / "rows.npz")


def _one_line_error(err):
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("jaxhp: error:")


# --------------------------------------------------------------- crafted databases
class _Payload:
    """Unpickling runs ``exec``: it writes the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


ESCAPE = (
    "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "
    "'catch_warnings'][0]()._module.__builtins__['__import__']('os')"
    ".system('touch {marker}')"
)


def _tamper(db, table, column, value, where=""):
    con = sqlite3.connect(db)
    with con:
        con.execute(f"UPDATE {table} SET {column} = ? {where}", (value,))
    con.close()


def _crafted(src, tmp_path, marker):
    """(label, path) of copies of ``src``, each with one stored field replaced by a
    pickle payload (blobs) or an ``eval`` escape (texts)."""
    payload = pickle.dumps(_Payload(marker))
    escape = ESCAPE.format(marker=marker)
    cases = []

    def copy(label):
        path = str(tmp_path / f"{label}.db")
        shutil.copy(src, path)
        cases.append((label, path))
        return path

    latest = "WHERE round = (SELECT MAX(round) FROM rounds)"
    _tamper(copy("strategy_state"), "rounds", "strategy_state", payload, latest)
    _tamper(copy("model_blob"), "models", "blob", payload)
    _tamper(copy("series_data"), "series", "data", payload)
    for table, column in (
        ("studies", "metric"),
        ("studies", "direction"),
        ("studies", "config"),
        ("trials", "status"),
        ("trials", "params"),
        ("trials", "fold_values"),
        ("trials", "value"),
        ("series", "name"),
        ("series", "dtype"),
    ):
        one = f"WHERE rowid = (SELECT MIN(rowid) FROM {table})"
        _tamper(copy(f"{table}_{column}"), table, column, escape, one)
    con = sqlite3.connect(src)
    cfg = json.loads(con.execute("SELECT config FROM studies").fetchone()[0])
    con.close()
    for key in ("space", "strategy", "metadata"):
        bad = dict(cfg, **{key: escape})
        _tamper(copy(f"config_{key}"), "studies", "config", json.dumps(bad))
    # A model whose Trainable names code to run, and one whose record is an .npz
    # with an object array.
    rec = jaxhp.serial.read_tree(_blob(src))
    for label, target in (("import_exec", "builtins:exec"), ("import_os", "os:system")):
        doc = json.loads(json.dumps(rec[0]["value"]))
        doc["trainable"] = {"import": target, "fields": {"dict": {}}}
        _tamper(
            copy(f"model_{label}"), "models", "blob", jaxhp.serial.dump_doc(doc, rec[1])
        )
    import io

    buf = io.BytesIO()
    np.savez(buf, __tree__=np.asarray([_Payload(marker)], dtype=object))
    _tamper(copy("model_object_npz"), "models", "blob", buf.getvalue())
    # The format of older jaxhp: pickles everywhere, refused as a whole.
    old = copy("old_format")
    con = sqlite3.connect(old)
    con.execute("PRAGMA user_version = 0")
    con.close()
    _tamper(old, "models", "blob", payload)
    return cases


def _blob(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT blob FROM models").fetchone()[0]
    finally:
        con.close()


def test_no_stored_field_runs_code_in_any_reader(study_db, tmp_path, capsys):
    db, rows = study_db
    marker = str(tmp_path / "ran")
    # The pickle and the escape do run code when evaluated as old jaxhp did.
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert os.path.exists(marker)
    os.remove(marker)
    report = str(tmp_path / "r.html")
    commands = [
        ["show"],
        ["export", "--format", "json"],
        ["report", "--out", report],
        ["predict", rows],
        ["resume", "--quiet"],
    ]
    for label, path in _crafted(db, tmp_path, marker):
        for cmd in commands:
            argv = [cmd[0], path, *cmd[1:]]
            rc = main(argv)
            out = capsys.readouterr()
            assert not os.path.exists(marker), (label, cmd)
            assert rc in (0, 2), (label, cmd, rc)
            if rc == 2:
                assert _one_line_error(out.err), (label, cmd, out.err)
        try:
            load(path).predict(np.zeros((1, 4)))
        except (StorageError, ValueError, TypeError) as e:
            assert "\n" not in str(e), (label, e)
        assert not os.path.exists(marker), label
    # The untampered study answers every reader.
    assert main(["show", db]) == 0
    assert "4 trials" in capsys.readouterr().out


def test_the_format_is_data(study_db):
    db, _ = study_db
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    cfg = json.loads(con.execute("SELECT config FROM studies").fetchone()[0])
    assert cfg["space"]["learning_rate"] == {"float": [1e-3, 0.3], "log": True}
    blobs = [r[0] for r in con.execute("SELECT strategy_state FROM rounds")]
    blobs += [r[0] for r in con.execute("SELECT blob FROM models")]
    con.close()
    assert all(b is None or b.startswith(b"PK") for b in blobs)  # .npz files
    doc, arrays = jaxhp.serial.read_tree(blobs[-1])
    assert doc["value"]["trainable"]["import"] == "jaxhp.tasks.mlp:MLPTrainable"
    assert all(a.dtype.kind != "O" for a in arrays.values())


def test_an_old_pickled_database_is_refused_and_migrates_only_when_trusted(
    study_db, tmp_path, capsys
):
    db, rows = study_db
    old = str(tmp_path / "old.db")
    shutil.copy(db, old)
    con = sqlite3.connect(old)
    with con:  # as older jaxhp wrote it: a repr space and pickles
        cfg = json.loads(con.execute("SELECT config FROM studies").fetchone()[0])
        cfg["space"] = repr(jaxhp.Space.from_data(cfg["space"]))
        con.execute("UPDATE studies SET config = ?", (json.dumps(cfg),))
        res = load(db)
        m = res.model
        legacy = jaxhp.results.Model.__new__(jaxhp.results.Model)
        legacy.__dict__.update(  # the old Model's pickled attributes
            trainable=m.trainable,
            state=jax.device_get(m.state),
            hp=m.hp,
            trial_id=m.trial_id,
            _x_mean=m._x_mean,
            _x_std=m._x_std,
            _aux=m._aux,
            _kind=m._kind,
            _classes=m._classes,
            _y_ndim=m._y_ndim,
        )
        con.execute("UPDATE models SET blob = ?", (pickle.dumps(legacy),))
        con.execute("UPDATE rounds SET strategy_state = ?", (pickle.dumps({"n": 1}),))
    con.execute("PRAGMA user_version = 0")
    con.close()
    for verb in (["show", old], ["predict", old, rows], ["resume", old]):
        assert main(verb) == 2
        err = capsys.readouterr().err
        assert _one_line_error(err) and "jaxhp migrate" in err, err
    new = str(tmp_path / "new.db")
    assert main(["migrate", old, new]) == 2
    assert "--trust" in capsys.readouterr().err and not os.path.exists(new)
    assert main(["migrate", old, new, "--trust"]) == 0
    back = load(new)
    assert back.space == res.space and len(back) == len(res)
    X = np.asarray(np.load(rows)["X"])
    np.testing.assert_array_equal(back.predict(X), res.predict(X))


# ------------------------------------------------------------ read-only readers
def test_readers_cannot_write_and_read_while_a_sweep_holds_the_write_lock(
    study_db, capsys
):
    db, rows = study_db
    s = Study(db, "iris", readonly=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        s._db.execute("DELETE FROM trials")
    s.close()
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a sweep committing a round
    try:
        t = time.perf_counter()
        for argv in (["show", db], ["export", db], ["predict", db, rows]):
            assert main(argv) == 0, capsys.readouterr().err
        assert time.perf_counter() - t < 30  # no reader waited for the lock
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    capsys.readouterr()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_readers_work_in_a_read_only_folder(study_db, tmp_path, capsys):
    db, _ = study_db
    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copy(db, folder / "s.db")
    folder.chmod(0o555)
    try:
        assert main(["show", str(folder / "s.db")]) == 0
        assert main(["export", str(folder / "s.db")]) == 0
    finally:
        folder.chmod(0o755)
    capsys.readouterr()


# ------------------------------------------------------- a Trainable in __main__
SCRIPT = """
import dataclasses, sys
import jax, jax.numpy as jnp, numpy as np
import jaxhp
from sklearn.datasets import load_iris


@dataclasses.dataclass(frozen=True)
class Linear:
    n_in: int
    n_out: int

    def init(self, key, hp):
        return {"w": jnp.zeros((self.n_in, self.n_out)), "b": jnp.zeros(self.n_out)}

    def _loss(self, s, batch):
        logits = batch.x @ s["w"] + s["b"]
        lp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(lp, batch.y[:, None].astype(jnp.int32), 1)[:, 0]
        return jnp.sum(jnp.where(batch.mask, nll, 0.0)) / jnp.maximum(batch.mask.sum(), 1)

    def step(self, state, batch, hp):
        loss, g = jax.value_and_grad(self._loss)(state, batch)
        new = jax.tree.map(lambda p, d: p - hp["learning_rate"] * d, state, g)
        return new, {"loss": loss}

    def evaluate(self, state, data, hp):
        hit = (data.x @ state["w"] + state["b"]).argmax(-1) == data.y
        acc = jnp.sum(jnp.where(data.mask, hit, 0)) / jnp.maximum(data.mask.sum(), 1)
        return {"accuracy": acc, "loss": self._loss(state, data)}

    def predict(self, state, x, hp):
        return x @ state["w"] + state["b"]


if __name__ == "__main__":
    X, y = load_iris(return_X_y=True)
    task = jaxhp.tasks.TrainableTask(
        Linear(4, 3), X, y, metric="accuracy", batch_size=32, epochs=3
    )
    space = jaxhp.Space(learning_rate=jaxhp.Float(0.01, 1.0, log=True))
    res = jaxhp.tune(task, space, "random", n_trials=3, population=3, storage=sys.argv[1])
    np.savez(sys.argv[2], X=X[:5], out=res.predict(X[:5]))
"""


def test_a_study_of_a_trainable_in_main_opens_in_another_process(tmp_path, capsys):
    script = tmp_path / "my_script.py"
    script.write_text(SCRIPT)
    db, ref = str(tmp_path / "m.db"), str(tmp_path / "ref.npz")
    subprocess.run(
        [sys.executable, str(script), db, ref], check=True, env=ENV, timeout=300
    )
    assert main(["show", db]) == 0
    assert "3 trials" in capsys.readouterr().out
    assert main(["export", db, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["report", db, "--out", str(tmp_path / "r.html")]) == 0
    res = load(db)  # without the Trainable: its weights cannot be used, and it says so
    assert res.model.trainable_name == "__main__:Linear"
    with pytest.raises(ValueError, match="__main__.*trainable="):
        res.predict(np.zeros((1, 4)))
    capsys.readouterr()
    assert main(["predict", db, ref]) == 2
    assert "--trainable" in capsys.readouterr().err
    # Given the class (built from the stored fields), predict works here.
    z = np.load(ref)
    out = str(tmp_path / "pred.csv")
    argv = ["predict", db, ref, "--trainable", f"{script}:Linear", "--out", out]
    assert main(argv) == 0, capsys.readouterr().err
    got = np.loadtxt(out, delimiter=",", skiprows=1)
    np.testing.assert_allclose(got, z["out"], rtol=1e-5, atol=1e-6)
    # And the library: load(..., trainable=an instance).
    sys.path.insert(0, str(tmp_path))
    try:
        import my_script

        res = load(db, trainable=my_script.Linear(4, 3))
        np.testing.assert_allclose(res.predict(z["X"]), z["out"], rtol=1e-5, atol=1e-6)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_script", None)


# --------------------------------------------------- one line, before any work
def _csv(path, text, mode="w"):
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def test_bad_input_files_fail_in_one_line(tmp_path, capsys):
    cfg = json.loads(json.dumps(TINY))
    cfg["study"]["storage"] = str(tmp_path / "x.db")

    def tune_with(path, **over):
        c = json.loads(json.dumps(cfg))
        c["data"] = {"path": path}
        c.update(over)
        p = tmp_path / "c.toml"
        p.write_text(C.dumps(c))
        rc = main(["tune", str(p), "--quiet"])
        return rc, capsys.readouterr().err

    head = "a,b,c\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20))
    cases = {
        "dup.csv": (
            _csv(tmp_path / "dup.csv", head.replace("a,b,c", "a,a,c")),
            "two columns named 'a'",
        ),
        "latin.csv": (
            _csv(tmp_path / "latin.csv", b"a,b,c\n1,\xe9,0\n", "wb"),
            "line 2 is not UTF-8",
        ),
        "folder.csv": (str(tmp_path / "folder.csv"), "is a folder"),
        "obj.npz": (str(tmp_path / "obj.npz"), "cannot be read without pickle"),
    }
    (tmp_path / "folder.csv").mkdir()
    np.savez(
        tmp_path / "obj.npz", X=np.array([{"a": 1}] * 4, dtype=object), y=[0, 1] * 2
    )
    for name, (path, message) in cases.items():
        rc, err = tune_with(path)
        assert rc == 2 and _one_line_error(err) and message in err, (name, err)
    assert not os.path.exists(tmp_path / "x.db")  # nothing was created
    # seed beyond a 64-bit integer
    p = tmp_path / "t.toml"
    p.write_text(C.dumps(cfg))
    assert main(["tune", str(p), "--seed", str(2**64), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert _one_line_error(err) and "search.seed" in err
    # show on a folder
    assert main(["show", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = _csv(tmp_path / "bom.csv", "\ufefflabel,x\n" + "0,1\n1,2\n" * 5)
    X, y, features = C.read_csv(path, target="label")
    assert features["target"] == "label" and X.shape == (10, 1)
    assert list(y[:2]) == [0, 1]


def test_out_into_a_missing_folder_fails_before_any_work(study_db, tmp_path, capsys):
    db, rows = study_db
    out = str(tmp_path / "no" / "such" / "f")
    for argv in (
        ["export", db, "--out", out],
        ["report", db, "--out", out],
        ["predict", db, rows, "--out", out],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert _one_line_error(err) and "does not exist" in err, (argv, err)


def test_report_without_matplotlib_is_one_line(study_db, monkeypatch, capsys):
    db, _ = study_db
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", db]) == 2
    err = capsys.readouterr().err
    assert _one_line_error(err) and "matplotlib" in err


def test_predict_refuses_non_finite_rows_naming_the_row(study_db, tmp_path, capsys):
    db, _ = study_db
    X = np.ones((5, 4))
    X[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=X)
    assert main(["predict", db, str(tmp_path / "nan.npz")]) == 2
    err = capsys.readouterr().err
    assert _one_line_error(err) and "row 3 has NaN or Inf" in err
    path = _csv(tmp_path / "inf.csv", "a,b,c,d\n1,2,3,4\n1,inf,3,4\n")
    assert main(["predict", db, path]) == 2
    err = capsys.readouterr().err
    assert _one_line_error(err) and "line 3 has NaN or Inf" in err


def test_a_second_writer_is_refused_before_it_trains(tmp_path, capsys):
    db, cfg = _tiny_study(tmp_path, n_trials=2)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        con = sqlite3.connect(db)
        with con:  # as a live sweep in another process leaves it
            con.execute(
                "INSERT OR REPLACE INTO writers VALUES (1, ?, ?, ?, ?)",
                (
                    sleeper.pid,
                    __import__("socket").gethostname(),
                    time.time(),
                    time.time(),
                ),
            )
        con.close()
        assert main(["tune", cfg, "--n-trials", "4", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert _one_line_error(err) and f"process {sleeper.pid}" in err
        assert len(load(db)) == 2  # nothing trained, nothing lost
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its process gone, the study is taken over.
    assert main(["tune", cfg, "--n-trials", "4", "--quiet"]) == 0
    assert len(load(db)) == 4


def test_a_failed_commit_is_one_line_and_keeps_what_was_stored(
    tmp_path, monkeypatch, capsys
):
    real = Study.commit_round
    calls = []

    def full(self, rnd, *a, **k):
        calls.append(rnd)
        if rnd == 1:  # the disk fills up
            self._db.execute(
                f"PRAGMA max_page_count = "
                f"{self._db.execute('PRAGMA page_count').fetchone()[0]}"
            )
        return real(self, rnd, *a, **k)

    monkeypatch.setattr(Study, "commit_round", full)
    cfg = json.loads(json.dumps(TINY))
    cfg["study"]["storage"] = str(tmp_path / "full.db")
    p = tmp_path / "c.toml"
    p.write_text(C.dumps(cfg))
    assert main(["tune", str(p), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert _one_line_error(err) and "could not store round 1" in err, err
    assert len(load(tmp_path / "full.db")) == 2  # round 0 kept


def test_large_regression_targets_are_standardised_without_overflow():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3)) * 1e20
    y = (X[:, 0] / 1e20 + 0.1 * rng.normal(size=120)) * 1e20
    with pytest.raises(DataError, match="overflow"):
        jaxhp.tasks.MLPRegressor(X, y, val_fraction=0.25)  # mse would be inf
    task = jaxhp.tasks.MLPRegressor(X, y, val_fraction=0.25, metric="r2")
    space = jaxhp.Space(
        learning_rate=jaxhp.Float(1e-3, 1e-2, log=True),
        width=jaxhp.Fixed(16),
        epochs=jaxhp.Fixed(3),
        batch_size=jaxhp.Fixed(32),
    )
    res = jaxhp.tune(task, space, "random", n_trials=2, population=2)
    assert res.summary()["diverged"] == 0 and res.best_value > 0
    pred = res.predict(X[:5])
    assert np.all(np.isfinite(pred)) and np.abs(pred).max() > 1e18


def test_relative_data_paths_resolve_against_the_config_file(
    tmp_path, monkeypatch, capsys
):
    proj = tmp_path / "proj"
    proj.mkdir()
    X, y = C.load_data(C.parse(TINY))
    lines = ["a,b,c,d,label"] + [
        ",".join(map(str, [*x, int(t)])) for x, t in zip(X, y, strict=True)
    ]
    (proj / "iris.csv").write_text("\n".join(lines) + "\n")
    cfg = json.loads(json.dumps(TINY))
    cfg["data"] = {"path": "iris.csv"}
    cfg["study"]["storage"] = str(tmp_path / "rel.db")
    cfg["search"]["n_trials"] = 2
    (proj / "c.toml").write_text(C.dumps(cfg))
    monkeypatch.chdir(tmp_path)  # elsewhere than the config's folder
    assert main(["tune", "proj/c.toml", "--quiet"]) == 0
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["resume", str(tmp_path / "rel.db"), "--n-trials", "4", "--quiet"]) == 0
    assert len(load(tmp_path / "rel.db")) == 4
    capsys.readouterr()


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    cfg = json.loads(json.dumps(TINY))
    cfg["study"]["storage"] = str(tmp_path / "c.db")
    # Far more than it can train before the signal (rounds of two iris trials are
    # milliseconds): the loop below sends SIGINT once a round is stored.
    cfg["search"].update(n_trials=100_000, population=2, strategy="random")
    p = tmp_path / "c.toml"
    p.write_text(C.dumps(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxhp.cli", "tune", str(p), "--quiet"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=ENV,
        # A shell without job control starts background commands with SIGINT
        # ignored, and a child inherits that: give it the default disposition, as a
        # terminal would, so Python installs its own handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(cfg["study"]["storage"]):
            try:
                if len(Study.names(cfg["study"]["storage"])) and len(
                    load(cfg["study"]["storage"], with_model=False)
                ):
                    break
            except StorageError:
                pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    try:
        err = proc.communicate(timeout=120)[1].decode()
    finally:
        proc.kill()  # never left running, whatever happened
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("jaxhp: interrupted"), err
    assert len(load(cfg["study"]["storage"])) >= 2


# ------------------------------------------------------- recycling with storage
RECYCLED = """
import sys
import jaxhp
from sklearn.datasets import load_iris

X, y = load_iris(return_X_y=True)
task = jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.3, seed=0)
space = jaxhp.Space(
    learning_rate=jaxhp.Float(1e-3, 0.3, log=True),
    width=jaxhp.Fixed(8),
    batch_size=jaxhp.Fixed(32),
    epochs=jaxhp.Int(2, 8),
)
KW = dict(n_trials=300, population=4, seed=1, recycle=True)
if __name__ == "__main__":
    jaxhp.tune(task, space, "random", storage=sys.argv[1], **KW)
"""


def test_sigkill_in_a_recycled_stream_with_storage_then_resume(tmp_path):
    script = tmp_path / "recycled.py"
    script.write_text(RECYCLED)
    n = 300
    db = str(tmp_path / "rec.db")
    proc = subprocess.Popen(
        [sys.executable, str(script), db],
        env=ENV,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    seen = 0
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            seen = len(load(db, with_model=False))
        except StorageError:
            seen = 0
        if seen >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.trial_id: t for t in load(db, with_model=False).trials}
    assert 8 <= len(before) < n
    sys.path.insert(0, str(tmp_path))
    try:
        import recycled
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("recycled", None)
    kw = dict(recycled.KW)
    res = jaxhp.tune(recycled.task, recycled.space, "random", storage=db, **kw)
    whole = jaxhp.tune(recycled.task, recycled.space, "random", **kw)
    ids = [t.trial_id for t in load(db).trials]
    assert ids == list(range(n)) == sorted(t.trial_id for t in res.trials)
    ref = {t.trial_id: t for t in whole.trials}
    for t in load(db).trials:  # every trial, before or after the kill, as uninterrupted
        r = ref[t.trial_id]
        assert t.params == r.params and t.status == r.status
        np.testing.assert_allclose(t.value, r.value, rtol=1e-5, atol=1e-6)
    for tid, t in before.items():  # what was stored before the kill is unchanged
        assert load(db).trials[tid].value == t.value or np.isnan(t.value)


# ------------------------------------------------------------- the data forms
def test_a_space_with_conditions_round_trips_through_json():
    space = jaxhp.Space(
        optimizer=jaxhp.Choice(["adam", "sgd"]),
        momentum=jaxhp.Float(0.5, 0.99, when={"optimizer": "sgd"}),
        n_layers=jaxhp.Int(1, 3),
        width_1=jaxhp.Int(8, 64, log=True, when={"n_layers": [2, 3]}),
        epochs=jaxhp.Fixed(3),
    )
    back = jaxhp.Space.from_data(json.loads(json.dumps(space.to_data())))
    assert back == space and repr(back) == repr(space)
    with pytest.raises(jaxhp.SpaceError):
        jaxhp.Space.from_data(ESCAPE)


@pytest.mark.parametrize("name", ["random", "sobol", "grid", "bayes"])
def test_every_strategy_state_round_trips_as_data(name):
    from jaxhp.strategies import make_strategy, with_enqueued

    space = jaxhp.Space(a=jaxhp.Float(0.0, 1.0), b=jaxhp.Choice(["x", "y"]))
    strat = with_enqueued(make_strategy(name, space), np.asarray([[0.5, 0.25]]))
    state = strat.init(jax.random.key(0))
    n = 4 if name == "grid" else 12  # a grid of 10 points
    for _ in range(2):  # bayes fits its GP after the initial design
        u, state = strat.ask(state, n)
        state = strat.tell(state, u, np.sin(7 * u[:, 0]) + u[:, 1])
    back = jaxhp.serial.load_tree(jaxhp.serial.dump_tree(state))
    assert type(back) is type(state)
    u1, _ = strat.ask(state, 3)
    u2, _ = strat.ask(back, 3)
    np.testing.assert_array_equal(u1, u2)


def test_a_custom_strategy_state_needs_its_template():
    import collections

    Mine = collections.namedtuple("Mine", "count key")
    state = Mine(3, jax.random.key(1))
    blob = jaxhp.serial.dump_tree(state)
    with pytest.raises(jaxhp.serial.SerialError, match="not one of jaxhp's own"):
        jaxhp.serial.load_tree(blob)
    back = jaxhp.serial.load_tree(blob, template=Mine(0, jax.random.key(0)))
    assert back.count == 3
    np.testing.assert_array_equal(
        jax.random.key_data(back.key), jax.random.key_data(state.key)
    )
