"""Command line, configs, SQLite storage, crash-resume and the report."""

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import jaxhp
from jaxhp import config as C
from jaxhp.cli import main
from jaxhp.storage import StudyMismatchError, load

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# A small sweep: iris, two searched parameters, bayes (so the GP history is part of the
# state that must survive a crash), rounds of 4 trials.
SWEEP = {
    "data": {"dataset": "iris"},
    "task": {"kind": "classifier", "val_fraction": 0.3},
    "search": {"strategy": "bayes", "n_trials": 28, "population": 4, "seed": 3},
    "early_stopping": {"patience": 3},
    "study": {"storage": "sweep.db", "name": "iris"},
    "space": {
        "learning_rate": {"float": [1e-3, 0.3], "log": True},
        "weight_decay": {"float": [1e-6, 1e-2], "log": True},
        "width": 8,
        "batch_size": 16,
        "epochs": 12,
    },
}


def write_config(tmp_path, cfg, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(C.dumps(cfg))
    return str(path)


def with_storage(cfg, path):
    cfg = json.loads(json.dumps(cfg))
    cfg["study"]["storage"] = str(path)
    return cfg


def test_config_round_trip(tmp_path):
    cfg = C.parse(SWEEP)
    text = C.dumps(cfg)
    again = C.parse(tomllib.loads(text))
    assert again == cfg
    # Defaults are filled in and written out.
    assert again["study"]["name"] == "iris" and again["search"]["seed"] == 3
    # The example shipped with jaxhp parses.
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "digits.toml")
    assert C.load_config(example)["search"]["strategy"] == "bayes"


def _set(cfg, dotted, value):
    cfg = json.loads(json.dumps(cfg))
    *path, last = dotted.split(".")
    node = cfg
    for p in path:
        node = node.setdefault(p, {})
    if value is DELETE:
        node.pop(last)
    else:
        node[last] = value
    return cfg


DELETE = object()
BAD = [
    ("search.population", 0, "search.population: expected an integer >= 1"),
    ("search.n_trials", "many", "search.n_trials: expected an integer"),
    ("search.strategy", "annealing", "search.strategy: expected one of"),
    ("search.seed", 1.5, "search.seed: expected an integer"),
    ("search.speed", 3, "search.speed: unknown key"),
    (
        "search.options",
        {"output_warp": "log_last"},
        "search.options: output_warp must be one of",
    ),
    ("search.options", {"restart": 4}, "search.options: "),
    (
        "search",
        {"strategy": "grid", "n_trials": 28, "options": {"points": 2}},
        "search.n_trials: the grid has 4 points but n_trials=28; set n_trials to 4",
    ),
    ("data.dataset", "mnist", "data.dataset: expected one of digits"),
    ("data", {"path": "x.parquet"}, "data.path: expected a .csv or .npz file"),
    ("data.path", "x.csv", "data: give exactly one of data.dataset or data.path"),
    ("data.categorical", ["a"], "data.categorical: only for a CSV file"),
    ("search.timeout", "soon", "search.timeout: expected a positive number of seconds"),
    ("search.timeout", 0, "search.timeout: expected a positive number of seconds"),
    ("task.kind", "ranker", "task.kind: expected 'classifier' or 'regressor'"),
    ("task.val_fraction", 1.5, "task.val_fraction: expected a number between 0 and 1"),
    ("task", {"folds": 1}, "task.folds: expected an integer >= 2"),
    ("task.folds", 3, "task: give task.val_fraction or task.folds, not both"),
    ("early_stopping.patience", 0, "early_stopping.patience: expected an integer >= 1"),
    ("early_stopping.kind", "bandit", "early_stopping.kind: expected one of"),
    (
        "early_stopping",
        {"kind": "asha", "patience": 3},
        "early_stopping.patience: not a setting of kind 'asha'",
    ),
    ("study.storage", DELETE, "study.storage: missing"),
    ("space.learning_rate", {"float": [0.1, 0.001]}, "space.learning_rate:"),
    ("space.learning_rate", {"float": [0.0, 0.1], "log": True}, "space.learning_rate:"),
    ("space.width", {"int": [8, 16.5]}, "space.width.int: bounds must be integers"),
    ("space.width", {"int": [8, 16], "step": 2}, "space.width: unexpected key"),
    ("space.batch_size", [], "space.batch_size: an empty list"),
    ("space.widht", 8, "space.widht"),
    ("space", {"width": 8}, "space: the bayes strategy needs a parameter to search"),
    ("space.dropout", {"float": [0.0, 1.5]}, "space.dropout"),
    ("sampler", {"x": 1}, "sampler: unknown section"),
    ("task.compute_dtype", "fp8", "task.compute_dtype: expected one of"),
    ("task.step_kernel", "fused", "task.step_kernel"),  # experiments/fused, not a key
    ("search.enqueue", {"learning_rate": 0.01}, "search.enqueue: expected a list"),
    ("search.enqueue", [0.01], "search.enqueue[0]: expected a table"),
    (
        "search.enqueue",
        [{"learning_rate": 0.01, "weight_decay": 1e-4}, {"learning_rate": 5.0}],
        "search.enqueue[1]: learning_rate: 5.0 is outside Float",
    ),
    (
        "search.enqueue",
        [{"learning_rate": 0.01}],
        "search.enqueue[0]: weight_decay: missing from configuration",
    ),
    (
        "search.enqueue",
        [{"learning_rate": 0.01, "weight_decay": 1e-4, "width": 16}],
        "search.enqueue[0]: width: 16 is not Fixed(value=8)",
    ),
    ("run.eval_every", 0, "run.eval_every: expected an integer >= 1"),
    ("run.eval_every", 2, "run.eval_every: early stopping reads the validation"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[m for *_, m in BAD])
def test_bad_config_gives_one_line_error_naming_the_key(
    tmp_path, capsys, key, value, message
):
    cfg = _set(with_storage(SWEEP, tmp_path / "s.db"), key, value)
    path = write_config(tmp_path, cfg)
    assert main(["tune", path, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("jaxhp: error: ") and message in err, err
    assert not (tmp_path / "s.db").exists()  # nothing ran, nothing was created


def test_bad_toml_and_overrides(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[search\nn_trials = 3")
    assert main(["tune", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    path = write_config(tmp_path, with_storage(SWEEP, tmp_path / "s.db"))
    assert main(["tune", path, "--set", "nonsense"]) == 2
    assert "expected SECTION.KEY=VALUE" in capsys.readouterr().err
    # Command-line options override the file.
    assert (
        main(
            [
                "tune",
                path,
                "--n-trials",
                "5",
                "--set",
                "space.epochs=7",
                "--set",
                "search.strategy=sobol",
                "--print-config",
            ]
        )
        == 0
    )
    merged = tomllib.loads(capsys.readouterr().out)
    assert merged["search"]["n_trials"] == 5
    assert merged["space"]["epochs"] == 7
    assert merged["search"]["strategy"] == "sobol"

    # The file is validated after the options: a flag supplies what the file leaves
    # out, or mends what it gets wrong, and a file error that no flag mends names its key.
    bare = {k: v for k, v in SWEEP.items() if k != "study"}
    bare["search"] = {**bare["search"], "population": 0}
    bare_path = write_config(tmp_path, bare, "bare.toml")
    assert main(["tune", bare_path, "--print-config"]) == 2
    assert "search.population: expected an integer >= 1" in capsys.readouterr().err
    db = str(tmp_path / "flag.db")
    args = ["tune", bare_path, "--population", "4", "--storage", db]
    assert main([*args, "--print-config"]) == 0
    merged = tomllib.loads(capsys.readouterr().out)
    assert merged["study"]["storage"] == db and merged["search"]["population"] == 4
    assert main([*args[:-2], "--print-config"]) == 2
    assert "study.storage: missing" in capsys.readouterr().err


def _snapshot(db):
    """Trials, curve rows and rounds, read in one transaction."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        con.execute("BEGIN")
        rounds = con.execute("SELECT COUNT(*), MAX(started) FROM rounds").fetchone()
        n_trials = con.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        no_curve = con.execute(
            "SELECT COUNT(*) FROM trials t WHERE NOT EXISTS "
            "(SELECT 1 FROM series c WHERE c.trial_id = t.trial_id)"
        ).fetchone()[0]
        con.execute("COMMIT")
    finally:
        con.close()
    return rounds[0], rounds[1] or 0, n_trials, no_curve


def _comparable(res):
    return [
        (
            t.trial_id,
            t.params,
            None if np.isnan(t.value) else t.value,
            t.status,
            t.epochs_run,
            t.best_epoch,
            {k: np.asarray(v).tolist() for k, v in sorted(t.curves.items())},
        )
        for t in res.trials
    ]


def test_sigkill_mid_sweep_then_resume_equals_uninterrupted(tmp_path):
    # Uninterrupted reference, in this process.
    ref_db = tmp_path / "ref.db"
    assert (
        main(
            [
                "tune",
                write_config(tmp_path, with_storage(SWEEP, ref_db), "ref.toml"),
                "--quiet",
            ]
        )
        == 0
    )
    ref = load(ref_db)
    assert len(ref) == SWEEP["search"]["n_trials"]

    # The same sweep in a subprocess, killed with SIGKILL in the middle.
    db = tmp_path / "killed.db"
    path = write_config(tmp_path, with_storage(SWEEP, db), "killed.toml")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxhp.cli", "tune", path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    # Two readers poll while it writes: every snapshot is a whole number of rounds.
    seen, problems, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            if db.exists():
                try:
                    r, started, n, no_curve = _snapshot(db)
                except sqlite3.OperationalError as e:  # schema not created yet
                    if "no such table" not in str(e):
                        problems.append(repr(e))
                    continue
                if n != started or no_curve:
                    problems.append((r, started, n, no_curve))
                seen.append(r)
            time.sleep(0.01)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    if _snapshot(db)[0] >= 3:  # the GP has been fitted and told
                        break
                except sqlite3.OperationalError:
                    pass
            time.sleep(0.02)
        assert proc.poll() is None, (
            "the sweep finished before it could be killed: "
            + proc.stderr.read().decode()
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert proc.returncode == -signal.SIGKILL
    assert not problems, problems
    assert seen and max(seen) >= 3
    rounds, started, n, _ = _snapshot(db)
    assert n == started < SWEEP["search"]["n_trials"]

    # Resume (as `jaxhp resume DB`) and compare with the uninterrupted run.
    assert main(["resume", str(db), "--quiet"]) == 0
    res = load(db)
    assert _comparable(res) == _comparable(ref)
    assert sorted(t.trial_id for t in res.trials) == list(range(len(ref)))
    X = np.random.default_rng(0).normal(size=(10, 4))
    np.testing.assert_array_equal(res.predict(X), ref.predict(X))
    assert res.model.trial_id == ref.model.trial_id == ref.best_trial.trial_id


def test_library_storage_resumes_and_refuses_a_different_study(tmp_path, clf_task):
    space = jaxhp.Space(
        learning_rate=jaxhp.Float(1e-3, 0.1, log=True),
        width=jaxhp.Fixed(8),
        epochs=jaxhp.Fixed(2),
    )
    db = str(tmp_path / "lib.db")
    first = jaxhp.tune(clf_task, space, "random", n_trials=4, population=4, storage=db)
    more = jaxhp.tune(clf_task, space, "random", n_trials=8, population=4, storage=db)
    assert more.stats["resumed_trials"] == 4
    assert _comparable(more)[:4] == _comparable(first)
    whole = jaxhp.tune(clf_task, space, "random", n_trials=8, population=4)
    assert _comparable(more) == _comparable(whole)
    with pytest.raises(ValueError, match="different seed"):
        jaxhp.tune(clf_task, space, "random", n_trials=8, seed=1, storage=db)
    # Another study in the same file is independent.
    other = jaxhp.tune(
        clf_task, space, "sobol", n_trials=2, population=2, storage=db, study_name="b"
    )
    assert len(other) == 2 and len(load(db, "default")) == 8
    with pytest.raises(jaxhp.storage.StorageError, match="name one"):
        load(db)


def test_enqueued_configurations_run_first_and_resume(tmp_path, clf_task):
    space = jaxhp.Space(
        learning_rate=jaxhp.Float(1e-3, 0.1, log=True),
        optimizer=jaxhp.Choice(["adam", "sgd"]),
        momentum=jaxhp.Float(0.5, 0.95),
        width=jaxhp.Fixed(8),
        epochs=jaxhp.Fixed(2),
    )
    first = [
        {"learning_rate": 0.01, "optimizer": "adam"},  # momentum does not matter
        {"learning_rate": 0.003, "optimizer": "sgd", "momentum": 0.9, "width": 8},
        {"learning_rate": 0.05, "optimizer": "adam", "momentum": 0.6},
    ]
    db = str(tmp_path / "q.db")
    run = dict(task=clf_task, space=space, strategy="bayes", n_trials=10, population=2)
    cut = jaxhp.tune(**run, enqueue=first, storage=db, timeout=1e-9)
    assert len(cut) == 2  # the first round: two of the three
    rest = jaxhp.tune(**run, enqueue=first, storage=db)
    whole = jaxhp.tune(**run, enqueue=first)
    assert _comparable(rest) == _comparable(whole)
    shown = [t.params for t in whole.trials[:3]]
    assert shown == [
        {"learning_rate": 0.01, "optimizer": "adam", "width": 8, "epochs": 2},
        {
            "learning_rate": 0.003,
            "optimizer": "sgd",
            "momentum": 0.9,
            "width": 8,
            "epochs": 2,
        },
        {"learning_rate": 0.05, "optimizer": "adam", "width": 8, "epochs": 2},
    ]
    with pytest.raises(StudyMismatchError, match="enqueued configurations"):
        jaxhp.tune(**run, enqueue=first[:2], storage=db)
    # Told to the strategy: bayes's design (max(10, D + 1) = 10 points) shrinks by 3,
    # so the 10th trial comes from the GP, not from the design.
    plain = jaxhp.tune(**run)
    assert [t.params for t in plain.trials[:3]] != shown
    with pytest.raises(ValueError, match="enqueue holds 3 configurations, more than"):
        jaxhp.tune(**{**run, "n_trials": 2}, enqueue=first)
    with pytest.raises(TypeError, match="enqueue takes a list"):
        jaxhp.tune(**run, enqueue=first[0])
    with pytest.raises(jaxhp.SpaceError, match=r"enqueue\[0\]: momentum: missing"):
        jaxhp.tune(**run, enqueue=[{"learning_rate": 0.01, "optimizer": "sgd"}])
    # a grid with n_trials=None runs the whole grid and the enqueued configurations
    grid = jaxhp.tune(
        clf_task,
        jaxhp.Space(
            learning_rate=jaxhp.Choice([0.01, 0.1]),
            width=jaxhp.Fixed(8),
            epochs=jaxhp.Fixed(1),
        ),
        "grid",
        population=4,
        enqueue=[{"learning_rate": 0.01}],
    )
    assert [t.params["learning_rate"] for t in grid.trials][0] == 0.01
    assert len(grid) == 3


def test_a_timeout_ends_the_call_after_a_round_and_the_study_goes_on(
    tmp_path, clf_task
):
    space = jaxhp.Space(
        learning_rate=jaxhp.Float(1e-3, 0.1, log=True),
        width=jaxhp.Fixed(8),
        epochs=jaxhp.Fixed(2),
    )
    db = str(tmp_path / "t.db")
    run = dict(task=clf_task, space=space, strategy="random", n_trials=12, population=4)
    cut = jaxhp.tune(**run, storage=db, timeout=1e-9)  # the first round always runs
    assert len(cut) == 4 and cut.stats["timed_out"]
    rest = jaxhp.tune(**run, storage=db, timeout=3600.0)
    assert len(rest) == 12 and not rest.stats["timed_out"]
    assert _comparable(rest) == _comparable(jaxhp.tune(**run))
    # Recycling: the first fill trains, no freed slot is refilled.
    rec = jaxhp.tune(**run, recycle=True, timeout=1e-9)
    assert len(rec) == 4 and rec.stats["timed_out"]
    for bad in (0, -1.0, True, float("inf"), "1h"):
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            jaxhp.tune(**run, timeout=bad)


def test_the_command_line_timeout_stops_a_sweep_that_resume_finishes(tmp_path, capsys):
    db = tmp_path / "t.db"
    cfg = with_storage(SWEEP, db)
    cfg["search"] = {"strategy": "random", "n_trials": 8, "population": 4}
    cfg["search"]["timeout"] = "1h30m"
    assert C.build(C.parse(cfg))["timeout"] == 5400.0
    path = write_config(tmp_path, cfg)
    assert main(["tune", path, "--quiet", "--timeout", "1e-9"]) == 0
    assert len(load(db)) == 4
    assert main(["resume", str(db), "--timeout", "2h"]) == 0
    out = capsys.readouterr().out
    assert "stopped at search.timeout with 4 trials to go: `jaxhp resume" not in out
    assert len(load(db)) == 8
    assert main(["tune", path, "--timeout", "1e-9", "--set", "search.n_trials=16"]) == 0
    out = capsys.readouterr().out
    assert f"stopped at search.timeout with 4 trials to go: `jaxhp resume {db}`" in out


def test_a_database_with_per_epoch_curve_rows_still_loads_and_resumes(
    tmp_path, clf_task
):
    """Databases written before the ``series`` table kept one ``curves`` row per trial,
    series and epoch; they load the same, and resuming one adds rounds to ``series``."""
    space = jaxhp.Space(
        learning_rate=jaxhp.Float(1e-3, 0.1, log=True),
        width=jaxhp.Fixed(8),
        epochs=jaxhp.Fixed(3),
        dropout=jaxhp.Float(0.0, 0.2),
    )
    db = str(tmp_path / "legacy.db")
    first = jaxhp.tune(clf_task, space, "random", n_trials=3, population=3, storage=db)
    con = sqlite3.connect(db)
    with con:  # rewrite the stored series into the old per-epoch layout
        con.execute(
            "CREATE TABLE curves (study_id INTEGER NOT NULL, trial_id INTEGER NOT "
            "NULL, epoch INTEGER NOT NULL, name TEXT NOT NULL, value REAL, "
            "PRIMARY KEY (study_id, trial_id, name, epoch))"
        )
        rows = con.execute("SELECT study_id, trial_id, name, data FROM series")
        con.executemany(
            "INSERT INTO curves VALUES (?, ?, ?, ?, ?)",
            [
                (sid, tid, e, name, None if np.isnan(v) else float(v))
                for sid, tid, name, data in rows.fetchall()
                for e, v in enumerate(np.frombuffer(data, "<f4"))
            ],
        )
        con.execute("DELETE FROM series")
    con.close()
    assert _comparable(load(db)) == _comparable(first)
    more = jaxhp.tune(clf_task, space, "random", n_trials=6, population=3, storage=db)
    assert more.stats["resumed_trials"] == 3
    whole = jaxhp.tune(clf_task, space, "random", n_trials=6, population=3)
    assert _comparable(load(db)) == _comparable(whole)


def test_stored_series_keep_their_values_and_precision(tmp_path):
    """Curves come back from the store exactly: float32 as float32 (NaN included),
    float64 as float64, per-fold series as a [epochs, folds] array."""
    curves = {
        "train_loss": np.asarray([0.5, 0.25, np.nan], np.float32),
        "value_folds": np.asarray([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], np.float32),
        "learning_rate": np.asarray([0.1, 0.1 / 3, 1e-9 / 7]),  # float64
    }
    trial = jaxhp.results.Trial(
        trial_id=0,
        params={"learning_rate": 0.1},
        value=0.5,
        status="complete",
        epochs_run=3,
        best_epoch=2,
        wall_time=1.0,
        round=0,
        fold_values=(0.5, 0.6),
        curves=curves,
    )
    study = jaxhp.storage.Study(tmp_path / "s.db")
    study.create(metric="accuracy", direction="maximize", config={})
    study.commit_round(
        0, [trial], started=1, strategy_state={}, wall_time=1.0, compile_time=0.0
    )
    (back,) = study.load().trials
    study.close()
    assert set(back.curves) == set(curves)
    for k, v in curves.items():
        assert back.curves[k].dtype == v.dtype and back.curves[k].shape == v.shape
        np.testing.assert_array_equal(back.curves[k], v)


def test_show_export_and_report(tmp_path, capsys):
    db = tmp_path / "r.db"
    cfg = with_storage(_set(SWEEP, "search.n_trials", 8), db)
    cfg["search"]["strategy"] = "random"
    cfg["space"]["learning_rate"] = {"float": [1e-3, 30.0], "log": True}  # some diverge
    assert main(["tune", write_config(tmp_path, cfg), "--quiet"]) == 0
    res = load(db)
    capsys.readouterr()
    # The same study again with another space: one line saying so, not a traceback.
    cfg["space"]["width"] = 16
    assert main(["tune", write_config(tmp_path, cfg, "other.toml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxhp: error: storage") and "different search space" in err
    assert main(["show", str(db), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "learning_rate" in out and "8 trials" in out
    # A study of a built-in dataset predicts rows of numbers: an NPZ's X, or a CSV.
    X, y = C.load_data(cfg)
    np.savez(tmp_path / "rows.npz", X=X[:4])
    assert main(["predict", str(db), str(tmp_path / "rows.npz")]) == 0
    out = capsys.readouterr().out.split()
    assert out == ["prediction"] + [str(v) for v in res.predict(X[:4])]
    _write_csv(tmp_path / "rows.csv", ["f0", "f1", "f2"], X[:4, :3])
    assert main(["predict", str(db), str(tmp_path / "rows.csv")]) == 2
    assert "rows: X rows have shape (3,), expected (4,)" in capsys.readouterr().err
    csv_path = tmp_path / "t.csv"
    assert main(["export", str(db), "--out", str(csv_path)]) == 0
    assert len(csv_path.read_text().strip().splitlines()) == 1 + len(res)
    # `jaxhp export db | head`: the reader is gone before the first write. No
    # traceback; the exit status a shell gives a process that SIGPIPE ended.
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxhp.cli", "export", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err
    pytest.importorskip("matplotlib")
    html_path = tmp_path / "report.html"
    assert main(["report", str(db), "--out", str(html_path)]) == 0
    doc = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)
    assert len(images) == 5
    for b in images:
        assert base64.b64decode(b).startswith(b"\x89PNG")
    assert "http" not in doc.replace("<!DOCTYPE html>", "")  # self-contained
    assert doc.count("<tr class=") == len(res)
    for t in res.trials:
        assert f"<td>{t.trial_id}</td>" in doc


def test_a_sweep_whose_every_trial_diverges_ends_with_a_summary(tmp_path, capsys):
    cfg = with_storage(SWEEP, tmp_path / "d.db")
    del cfg["early_stopping"]
    cfg["search"] = {"strategy": "random", "n_trials": 2, "population": 2}
    cfg["space"] = {"learning_rate": 1e6, "optimizer": "sgd", "width": 8, "epochs": 2}
    assert main(["tune", write_config(tmp_path, cfg)]) == 0
    out = capsys.readouterr().out
    assert "2 trials (2 diverged); no trial finished with a finite accuracy" in out
    assert load(tmp_path / "d.db").summary()["diverged"] == 2


def _write_csv(path, header, rows):
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    return str(path)


def test_csv_text_columns_are_one_hot_and_a_csv_sweep_runs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    colours = ["red", "green", "blue"]
    rows = []
    for i in range(90):
        a, c, z = rng.normal(), colours[i % 3], [10001, 10002][i % 2]
        label = "yes" if a + (c == "red") > 0.5 else "no"  # the colour matters
        rows.append([a, f" {c}", z, label])
    path = _write_csv(tmp_path / "d.csv", ["a", "colour", "zip", "label"], rows)
    cfg = C.parse({**SWEEP, "data": {"path": path, "categorical": ["zip"]}})
    X, y = C.load_data(cfg)
    # a, then colour one-hot (blue, green, red: sorted, spaces stripped), then zip's.
    assert X.shape == (90, 1 + 3 + 2)
    np.testing.assert_array_equal(X[:, 0], [r[0] for r in rows])
    np.testing.assert_array_equal(X[:3, 1:4], [[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(X[:2, 4:], [[1, 0], [0, 1]])
    assert set(y) == {"yes", "no"} and y[0] == rows[0][3]
    cfg = C.parse({**SWEEP, "data": {"path": path, "target": "a"}})
    cfg["task"]["kind"] = "regressor"
    X, y = C.load_data(cfg)  # zip is a number now; label is one-hot
    assert X.shape == (90, 3 + 1 + 2) and y.dtype == np.float64
    run = with_storage(SWEEP, tmp_path / "c.db")
    run["data"] = {"path": path}
    run["search"] = {"strategy": "random", "n_trials": 2, "population": 2}
    assert main(["tune", write_config(tmp_path, run), "--quiet"]) == 0
    db = str(tmp_path / "c.db")
    res = load(db)
    assert res.best_value > 0.5
    # `jaxhp predict`: new rows encoded as the training CSV was (another column order,
    # an extra column, no target), matching the model's own predictions.
    capsys.readouterr()
    new = [[r[3], r[2], r[0], r[1].strip(), "x"] for r in rows[:5]]
    path = _write_csv(tmp_path / "n.csv", ["label", "zip", "a", "colour", "note"], new)
    assert main(["predict", db, path, "--proba"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0] == "prediction,p_no,p_yes" and len(lines) == 6
    X, _ = C.load_data(C.parse({**SWEEP, "data": {"path": str(tmp_path / "d.csv")}}))
    assert [ln.split(",")[0] for ln in lines[1:]] == list(res.predict(X[:5]))
    assert np.allclose([sum(map(float, ln.split(",")[1:])) for ln in lines[1:]], 1)
    assert err.startswith("jaxhp: accuracy ") and "on the 5 rows' own targets" in err
    new[0][3] = "purple"
    path = _write_csv(tmp_path / "m.csv", ["label", "zip", "a", "colour", "note"], new)
    assert main(["predict", db, path]) == 2
    err = capsys.readouterr().err
    assert "line 2, column 'colour': 'purple' is not a category the model" in err
    path = _write_csv(tmp_path / "o.csv", ["a", "zip"], [r[:1] + r[2:3] for r in new])
    assert main(["predict", db, path]) == 2
    assert "lacks the column(s) 'colour' that the model" in capsys.readouterr().err


def test_npz_data_loads_its_arrays(tmp_path):
    X, y = np.arange(12.0).reshape(6, 2), np.array([0, 1] * 3)
    np.savez(tmp_path / "d.npz", X=X, label=y)
    cfg = C.parse(
        {**SWEEP, "data": {"path": str(tmp_path / "d.npz"), "target": "label"}}
    )
    got = C.load_data(cfg)
    np.testing.assert_array_equal(got[0], X)
    np.testing.assert_array_equal(got[1], y)
    cfg["data"]["target"] = "y"
    with pytest.raises(C.ConfigError, match=r"holds arrays \['X', 'label'\]"):
        C.load_data(cfg)


@pytest.mark.parametrize(
    "rows,data,message",
    [
        (
            [[1, 2, 0], [2, "x", 1], [3, 4, 0]],
            {},
            "line 3, column 'b': 'x' is not a number, though 2 of the column's values",
        ),
        ([[1, 2, 0], [2, "", 1]], {}, "line 3, column 'b': empty"),
        ([[1, 2, 0], [2, 3, ""]], {}, "line 3, column 'c' (the target): empty"),
        ([[1, 2, 0], [2, 3]], {}, "line 3 has 2 fields, expected 3"),
        ([[1, 2, 0]], {"target": "d"}, "data.target: no column 'd'"),
        ([[1, 2, 0]], {"categorical": ["c"]}, "data.categorical: 'c' is not a feature"),
        ([[1, 2, 0]], {"categorical": "a"}, "data.categorical: expected a list"),
        (
            [[i, f"id{i}", i % 2] for i in range(300)],
            {},
            "column 'b': 300 distinct values, more than 256 categories",
        ),
    ],
)
def test_csv_errors_name_the_line_and_column(tmp_path, rows, data, message):
    path = _write_csv(tmp_path / "d.csv", ["a", "b", "c"], rows)
    with pytest.raises(C.ConfigError) as e:
        C.load_data(C.parse({**SWEEP, "data": {"path": path, **data}}))
    assert message in str(e.value), e.value


def test_storage_errors(tmp_path, capsys):
    assert main(["show", str(tmp_path / "missing.db")]) == 2
    assert "no database" in capsys.readouterr().err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    assert main(["show", str(junk)]) == 2
    assert "jaxhp: error:" in capsys.readouterr().err


def test_rounds_commit_in_the_background_and_none_is_lost(
    tmp_path, clf_task, monkeypatch
):
    # Round k is written on the writer thread while round k + 1 trains. A commit that
    # fails is raised by tune() (at the next round's commit), with the rounds before it
    # stored; a round loop that raises still lands the round already handed over.
    from jaxhp.storage import Study

    space = jaxhp.Space(
        learning_rate=jaxhp.Float(1e-3, 0.1, log=True),
        width=jaxhp.Fixed(8),
        epochs=jaxhp.Fixed(1),
    )
    # The accelerators' choice, on this CPU.
    background = jaxhp.engine.EngineOptions.for_platform(
        "cpu", commit_in_background=True
    )
    kw = dict(strategy="random", n_trials=12, population=4)
    commit, threads = Study.commit_round, set()

    def failing(self, rnd, *a, **k):
        threads.add(threading.current_thread().name)
        if rnd == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return commit(self, rnd, *a, **k)

    monkeypatch.setattr(Study, "commit_round", failing)
    db = tmp_path / "fail.db"
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        jaxhp.tune(clf_task, space, storage=str(db), engine_options=background, **kw)
    assert [t.trial_id for t in load(db).trials] == [0, 1, 2, 3]
    assert threads and all(n.startswith("jaxhp-storage") for n in threads)
    monkeypatch.setattr(Study, "commit_round", commit)

    def stop_in_round_1(trials):
        if trials[0].round == 1:
            raise KeyboardInterrupt

    db = tmp_path / "interrupted.db"
    with pytest.raises(KeyboardInterrupt):
        jaxhp.tune(
            clf_task,
            space,
            storage=str(db),
            callback=stop_in_round_1,
            engine_options=background,
            **kw,
        )
    assert len(load(db)) == 8  # rounds 0 and 1: round 1 was handed over before
    res = jaxhp.tune(clf_task, space, storage=str(db), engine_options=background, **kw)
    whole = jaxhp.tune(clf_task, space, **kw)
    assert _comparable(res) == _comparable(whole)
    assert res.stats["storage_wait"] > 0.0  # at least the last round's commit
    assert "storage_wait" not in whole.stats
