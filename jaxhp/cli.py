"""The ``jaxhp`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import jax
    from sklearn.datasets import load_digits

    import jaxhp

    X, y = load_digits(return_X_y=True)
    task = jaxhp.tasks.MLPClassifier(X, y, val_fraction=0.2, seed=args.seed)
    space = jaxhp.Space(
        n_layers=jaxhp.Int(1, 3),
        width=jaxhp.Int(16, 128, log=True),
        learning_rate=jaxhp.Float(1e-4, 3e-2, log=True),
        weight_decay=jaxhp.Float(1e-6, 1e-2, log=True),
        dropout=jaxhp.Float(0.0, 0.3),
        batch_size=jaxhp.Choice([32, 64, 128]),
        epochs=jaxhp.Int(5, 30),
        optimizer=jaxhp.Choice(["adam", "adamw", "sgd"]),
    )
    print(
        f"jaxhp demo: {args.n_trials} trials of an MLP on scikit-learn's digits "
        f"({len(X)} images, 10 classes, 20% stratified validation), strategy={args.strategy}, "
        f"population={args.population}, early stopping Patience(4), on "
        f"{jax.devices()[0].platform.upper()}\n",
        flush=True,
    )
    t0 = time.perf_counter()
    result = jaxhp.tune(
        task,
        space,
        args.strategy,
        n_trials=args.n_trials,
        population=args.population,
        seed=args.seed,
        early_stopping=jaxhp.stopping.Patience(4),
        verbose=not args.quiet,
    )
    elapsed = time.perf_counter() - t0
    print(
        f"\nTop {args.top} of {len(result)} trials (validation accuracy at the best epoch):"
    )
    print(result.table(args.top))
    counts = ", ".join(f"{v} {k}" for k, v in result.summary().items())
    st = result.stats
    print(
        f"\n{counts}; {elapsed:.1f}s in all ({st['compile_time']:.1f}s compiling "
        f"{st['programs_compiled']} programs for {st['buckets']} buckets)"
    )
    print(_describe_work(st))
    print(f"\nBest configuration (trial {result.best_trial.trial_id}):")
    print(json.dumps(result.best_params, indent=2))
    print(f"best validation accuracy: {result.best_value:.4f}")
    acc = float((result.predict(X) == y).mean())
    print(f"accuracy of its trained weights on all {len(X)} digits: {acc:.4f}")
    return 0


def _describe_work(stats) -> str:
    from jaxhp.engine.work import describe  # jax loads only once a sweep runs

    return describe(stats.get("work"))


def _error(msg: str) -> int:
    print(f"jaxhp: error: {msg}", file=sys.stderr)
    return 2


def _tune_config(cfg: dict, quiet: bool) -> int:
    import jaxhp
    from jaxhp import config as C

    kwargs = C.build(cfg)
    storage, name = kwargs["storage"], kwargs["study_name"]
    s = cfg["search"]
    if not quiet:
        where = cfg["data"].get("dataset") or cfg["data"]["path"]
        print(
            f"jaxhp: study {name!r} in {storage}: {s['n_trials']} trials of an MLP "
            f"{cfg['task']['kind']} on {where}, strategy={s['strategy']}, "
            f"population={s['population']}, seed={s['seed']}",
            file=sys.stderr,
            flush=True,
        )
    result = jaxhp.tune(**kwargs, verbose=not quiet)
    if not quiet and jaxhp.distributed.is_leader():
        print(result.table(10))
        counts = ", ".join(f"{v} {k}" for k, v in result.summary().items() if v)
        best = (
            f"best {result.metric} {result.best_value:.4f}"
            if result.best_trial is not None
            else f"no trial finished with a finite {result.metric}"
        )
        print(f"\n{len(result)} trials ({counts}); {best}; stored in {storage}")
        print(_describe_work(result.stats))
        if result.stats["timed_out"]:
            print(
                f"stopped at search.timeout with {s['n_trials'] - len(result)} trials "
                f"to go: `jaxhp resume {storage}` continues"
            )
    return 0


def _tune(args: argparse.Namespace) -> int:
    from jaxhp import config as C

    # Validated once, after the overrides: a flag may supply what the file leaves out
    # (--storage for a file without [study]) or mend a bad value in it.
    cfg = C.read_config(args.config)
    C.resolve_paths(cfg, os.path.dirname(os.path.abspath(args.config)))
    for flag, section, key in (
        ("n_trials", "search", "n_trials"),
        ("population", "search", "population"),
        ("seed", "search", "seed"),
        ("strategy", "search", "strategy"),
        ("timeout", "search", "timeout"),
        ("storage", "study", "storage"),
        ("study", "study", "name"),
    ):
        v = getattr(args, flag)
        if v is not None:
            cfg.setdefault(section, {})[key] = v
    for a in args.set or []:
        C.set_option(cfg, a)
    C.resolve_paths(cfg, os.getcwd())  # a --set path: from where jaxhp runs
    cfg = C.parse(cfg)
    if args.print_config:
        print(C.dumps(cfg), end="")
        return 0
    return _tune_config(cfg, args.quiet)


def _stored_metadata(db: str, study: str | None) -> dict:
    """The metadata a study was created with (the command line's config, the CSV's
    features; empty for a study started from Python)."""
    from jaxhp.storage import StorageError, Study

    names = Study.names(db)
    if study is None:
        if len(names) != 1:
            raise StorageError(f"{db} holds studies {names}; choose one with --study")
        study = names[0]
    s = Study(db, study, readonly=True)
    try:
        if not s.exists:
            raise StorageError(f"no study {study!r} in {db} (it holds {names})")
        meta = (s.config or {}).get("metadata", {})
        if not isinstance(meta, dict):
            raise StorageError(f"{db}: study {study!r} has unreadable metadata")
        return meta
    finally:
        s.close()


def _stored_config(db: str, study: str | None) -> dict:
    from jaxhp.storage import StorageError

    cfg = _stored_metadata(db, study).get("config")
    if cfg is not None and not isinstance(cfg, dict):
        raise StorageError(f"{db}: study {study!r} has an unreadable stored config")
    if cfg is None:
        raise StorageError(
            f"study {study!r} in {db} was started from Python, not from a config file: "
            "resume it by calling jaxhp.tune(...) again with storage= and the same settings"
        )
    return cfg


def _resume(args: argparse.Namespace) -> int:
    from jaxhp import config as C

    cfg = _stored_config(args.db, args.study)
    if not isinstance(cfg.get("study"), dict):
        raise C.ConfigError(f"{args.db}: the stored config has no [study] table")
    cfg["study"]["storage"] = args.db  # the file may have moved
    if args.n_trials is not None:
        cfg["search"]["n_trials"] = args.n_trials
    if args.timeout is not None:
        cfg["search"]["timeout"] = args.timeout
    return _tune_config(C.parse(cfg), args.quiet)


def _check_out(path: str | None, flag: str = "--out") -> None:
    """Before any work: ``path``'s folder exists and ``path`` is not a folder."""
    from jaxhp.config import ConfigError

    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"{flag}: folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise ConfigError(f"{flag}: {path!r} is a folder; give a file name")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{flag}: folder {folder!r} is not writable")


def _open_out(path: str):
    from jaxhp.config import ConfigError

    try:
        return open(path, "w", newline="")
    except OSError as e:
        raise ConfigError(f"--out: cannot write {path!r} ({e.strerror})") from None


def _show(args: argparse.Namespace) -> int:
    from jaxhp.storage import load

    res = load(args.db, args.study, with_model=False)
    print(res.table(args.top))
    counts = ", ".join(f"{v} {k}" for k, v in res.summary().items() if v)
    rounds = res.stats["rounds"]
    print(
        f"\n{len(res)} trial{'s' * (len(res) != 1)} ({counts or 'none yet'}) "
        f"in {rounds} round{'s' * (rounds != 1)}"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from jaxhp.storage import load

    _check_out(args.out)
    res = load(args.db, args.study, with_model=False)
    out = _open_out(args.out) if args.out else sys.stdout
    try:
        if args.format == "json":
            recs = [
                {
                    k: None if isinstance(v, float) and v != v else v
                    for k, v in r.items()
                }
                for r in res.records()
            ]
            json.dump(recs, out, indent=1)
            out.write("\n")
        else:
            import csv

            recs = res.records()
            if recs:
                w = csv.DictWriter(out, fieldnames=list(recs[0]))
                w.writeheader()
                w.writerows(recs)
    finally:
        if args.out:
            out.close()
    return 0


def _predict(args: argparse.Namespace) -> int:
    import csv

    import numpy as np

    from jaxhp import config as C
    from jaxhp import tables
    from jaxhp.storage import StorageError, load

    tables.check_file(args.rows, "rows")  # before the study is read
    _check_out(args.out)
    trainable = _trainable_arg(args.trainable) if args.trainable else None
    res = load(args.db, args.study, trainable=trainable)
    if res.model is None:
        raise StorageError(f"{args.db} holds no trained model (no trial finished yet)")
    features = _stored_metadata(args.db, args.study).get("features")
    y = None
    if features is not None and not _features_ok(features):
        raise StorageError(f"{args.db}: the stored CSV features are unreadable")
    row_name = "row {}"  # how an error names a row of X
    if args.rows.lower().endswith(".npz"):
        arrays, _ = tables.read_npz(args.rows, "rows", ("X",))
        if "X" not in arrays:
            raise C.ConfigError(f"rows: {args.rows!r} has no array 'X'")
        X = arrays["X"]
    elif args.rows.lower().endswith(".csv"):
        # Encoded as the training CSV was; a study of a built-in dataset or an NPZ
        # file (or one started from Python) takes a CSV of numbers, all features.
        if features is None:
            names = tables.csv_header(args.rows, "rows")
            features = {"target": None, "columns": [[n, None] for n in names]}
        X, y, _ = tables.read_csv(args.rows, features=features, key="rows")
        row_name = "line {}"
    else:
        raise C.ConfigError(f"rows: expected a .csv or .npz file, got {args.rows!r}")
    try:
        X = np.asarray(X, np.float32)
    except (TypeError, ValueError) as e:
        raise C.ConfigError(f"rows: {args.rows!r}: X is not numeric ({e})") from None
    if X.ndim < 2:
        raise C.ConfigError(f"rows: X must have shape [rows, features], got {X.shape}")
    bad = np.flatnonzero(~np.isfinite(X.reshape(len(X), -1)).all(1))
    if len(bad):
        i = int(bad[0])
        at = row_name.format(i + 2 if "line" in row_name else i)
        raise C.ConfigError(
            f"rows: {args.rows!r} {at} has NaN or Inf ({len(bad)} such row(s)); "
            "drop or fill them"
        )
    if args.proba and res.model.kind != "classifier":
        raise C.ConfigError("--proba: the study's model is not a classifier")
    from jaxhp.results import TrainableError

    try:  # rows of the wrong width: one line, not a traceback
        pred = res.predict(X)
        proba = res.predict_proba(X) if args.proba else None
    except TrainableError as e:
        raise StorageError(f"{args.db}: {e}") from None
    except (TypeError, ValueError) as e:
        raise C.ConfigError(f"rows: {e}") from None
    out = _open_out(args.out) if args.out else sys.stdout
    try:
        w = csv.writer(out)
        pred = pred.reshape(len(pred), -1)
        cols = (
            ["prediction"]
            if pred.shape[1] == 1
            else [f"prediction_{k}" for k in range(pred.shape[1])]
        )
        classes = res.model.classes if proba is not None else []
        w.writerow(cols + [f"p_{c}" for c in classes])
        for k in range(len(pred)):
            row = [v.item() for v in pred[k]]
            w.writerow(row + ([] if proba is None else [f"{p:.6g}" for p in proba[k]]))
    finally:
        if args.out:
            out.close()
    if y is not None:  # the rows came with their targets: how well the model does
        if res.model.kind == "classifier":  # labels as read: compare their text
            hit = pred[:, 0].astype(str) == np.asarray(y).astype(str)
            score = f"accuracy {np.mean(hit):.4f}"
        else:
            err = pred.astype(np.float64) - np.asarray(y, np.float64).reshape(
                pred.shape
            )
            score = f"mse {np.mean(err**2):.6g}"
        print(f"jaxhp: {score} on the {len(pred)} rows' own targets", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from jaxhp.config import ConfigError
    from jaxhp.report import write_report
    from jaxhp.storage import load

    try:
        import matplotlib  # noqa: F401 - checked before the study is read
    except ImportError:
        raise ConfigError(
            'report: needs matplotlib, which is not installed: pip install "jaxhp[report]"'
        ) from None
    out = args.out or os.path.splitext(args.db)[0] + "_report.html"
    _check_out(out, "--out" if args.out else "report")
    res = load(args.db, args.study, with_model=False)
    try:
        write_report(res, out)
    except OSError as e:
        raise ConfigError(f"--out: cannot write {out!r} ({e.strerror})") from None
    print(f"wrote {out}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from jaxhp.migrate import migrate

    names = migrate(args.old, args.new, trust=args.trust)
    print(f"wrote {args.new}: {len(names)} stud{'y' if len(names) == 1 else 'ies'}")
    return 0


def _features_ok(features) -> bool:
    return (
        isinstance(features, dict)
        and isinstance(features.get("columns"), list)
        and all(
            isinstance(c, list)
            and len(c) == 2
            and isinstance(c[0], str)
            and (c[1] is None or isinstance(c[1], list))
            for c in features["columns"]
        )
    )


def _trainable_arg(spec: str):
    """``--trainable FILE.py:Name`` or ``module:Name``: the class (built from the
    study's stored fields) or instance the user names. A file is run as a module of
    its own name, not as ``__main__``."""
    import importlib
    import importlib.util

    from jaxhp.config import ConfigError

    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ConfigError(
            f"--trainable: expected FILE.py:Name or module:Name, got {spec!r}"
        )
    try:
        if where.endswith(".py"):
            if not os.path.isfile(where):
                raise ConfigError(f"--trainable: file {where!r} not found")
            mod_name = os.path.splitext(os.path.basename(where))[0]
            spec_ = importlib.util.spec_from_file_location(mod_name, where)
            module = importlib.util.module_from_spec(spec_)
            sys.modules.setdefault(mod_name, module)
            spec_.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's own code, named on purpose
        raise ConfigError(f"--trainable: cannot import {where!r} ({e})") from None
    obj = module
    for part in name.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        raise ConfigError(f"--trainable: {where!r} defines no {name!r}")
    return obj


def _parser() -> argparse.ArgumentParser:
    """The ``jaxhp`` argument parser: one sub-command per verb."""
    parser = argparse.ArgumentParser(
        prog="jaxhp",
        description="Tune neural-network hyperparameters by training populations of trials "
        "at once with JAX.",
    )
    parser.add_argument(
        "--version", action="store_true", help="print the version and exit"
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for add in (
        _add_demo,
        _add_tune,
        _add_resume,
        _add_show,
        _add_report,
        _add_predict,
        _add_export,
        _add_migrate,
    ):
        add(verbs)
    return parser


def _add_demo(verbs) -> None:
    demo = verbs.add_parser(
        "demo",
        help="tune an MLP on scikit-learn's digits (a real sweep, ~1 minute on 2 CPU cores)",
        description="A real sweep: depth, width, learning rate, weight decay, dropout, batch "
        "size, epochs and optimizer of an MLP on the digits dataset, with early stopping.",
    )
    demo.add_argument(
        "--n-trials", type=int, default=64, help="trials to run (default 64)"
    )
    demo.add_argument(
        "--population", type=int, default=64, help="trials per round (default 64)"
    )
    demo.add_argument(
        "--strategy",
        default="sobol",
        choices=["grid", "random", "sobol", "bayes"],
        help="default sobol",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--top", type=int, default=10, help="rows of the results table")
    demo.add_argument(
        "--quiet", action="store_true", help="no per-round progress lines"
    )
    demo.set_defaults(func=_demo)


def _add_tune(verbs) -> None:
    tune = verbs.add_parser(
        "tune",
        help="run a sweep described by a TOML config file (stored in SQLite)",
        description="Run the sweep a TOML config describes (see the README). Options "
        "given here override the file. Re-running the same config resumes the study.",
    )
    tune.add_argument("config", help="the TOML config file")
    tune.add_argument("--n-trials", type=int, help="override search.n_trials")
    tune.add_argument("--population", type=int, help="override search.population")
    tune.add_argument("--seed", type=int, help="override search.seed")
    tune.add_argument("--strategy", help="override search.strategy")
    tune.add_argument(
        "--timeout", help="override search.timeout (e.g. 90s, 30m, 2h, or seconds)"
    )
    tune.add_argument("--storage", help="override study.storage (database path)")
    tune.add_argument("--study", help="override study.name")
    tune.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override any key, VALUE in TOML syntax (repeatable), "
        "e.g. --set 'space.epochs=30'",
    )
    tune.add_argument(
        "--print-config", action="store_true", help="print the merged config and exit"
    )
    tune.add_argument("--quiet", action="store_true", help="no progress display")
    tune.set_defaults(func=_tune)


def _add_resume(verbs) -> None:
    resume = verbs.add_parser(
        "resume", help="continue an interrupted study from its database"
    )
    resume.add_argument("db", help="the study database")
    resume.add_argument("--study", help="study name (when the database holds several)")
    resume.add_argument(
        "--n-trials", type=int, help="raise the study's trial budget and continue"
    )
    resume.add_argument(
        "--timeout",
        help="start no round after this long (e.g. 30m; default: the config's)",
    )
    resume.add_argument("--quiet", action="store_true", help="no progress display")
    resume.set_defaults(func=_resume)


def _add_show(verbs) -> None:
    show = verbs.add_parser("show", help="print a study's best trials as a table")
    show.add_argument("db")
    show.add_argument("--study")
    show.add_argument("--top", type=int, default=20, help="rows (default 20)")
    show.set_defaults(func=_show)


def _add_report(verbs) -> None:
    report = verbs.add_parser(
        "report",
        help="write a self-contained HTML report with plots (needs matplotlib)",
    )
    report.add_argument("db")
    report.add_argument("--study")
    report.add_argument("--out", help="HTML path (default: DB's name + _report.html)")
    report.set_defaults(func=_report)


def _add_predict(verbs) -> None:
    predict = verbs.add_parser(
        "predict",
        help="predict rows of a CSV or NPZ file with a study's best model",
        description="Predict with the best trial's trained weights (a fold ensemble "
        "with k-fold). A CSV is encoded as the training CSV was: the same columns, "
        "text columns one-hot with the training categories. When the rows carry "
        "the target column, the score on them is printed to standard error.",
    )
    predict.add_argument("db")
    predict.add_argument("rows", help="a .csv file (header row) or .npz (array X)")
    predict.add_argument("--study")
    predict.add_argument(
        "--proba", action="store_true", help="add each class's probability (p_<class>)"
    )
    predict.add_argument("--out", help="CSV to write (default: standard output)")
    predict.add_argument(
        "--trainable",
        metavar="FILE.py:Name",
        help="the study's Trainable class (or instance), for one that cannot be "
        "imported here, e.g. defined in a script's __main__ (also module:Name)",
    )
    predict.set_defaults(func=_predict)


def _add_export(verbs) -> None:
    export = verbs.add_parser("export", help="write a study's trials as CSV or JSON")
    export.add_argument("db")
    export.add_argument("--study")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--out", help="file to write (default: standard output)")
    export.set_defaults(func=_export)


def _add_migrate(verbs) -> None:
    migrate = verbs.add_parser(
        "migrate",
        help="convert a database of an older jaxhp (pickles) into the current format",
        description="Old databases stored pickles, which run code when read; this "
        "format stores data only. migrate unpickles OLD (so pass --trust only for a "
        "file you trust) and writes NEW.",
    )
    migrate.add_argument("old")
    migrate.add_argument("new")
    migrate.add_argument(
        "--trust",
        action="store_true",
        help="unpickle OLD's model and strategy state (runs any code stored there)",
    )
    migrate.set_defaults(func=_migrate)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from jaxhp import __version__

        print(__version__)
        return 0
    if args.verb is None:
        parser.print_help()
        return 0
    from jaxhp.config import ConfigError
    from jaxhp.space import SpaceError
    from jaxhp.storage import StorageError
    from jaxhp.tasks.data import DataError

    try:
        if args.verb in ("tune", "resume", "demo"):
            from jaxhp.distributed import initialize

            initialize()  # a no-op unless the JAXHP_COORDINATOR variables are set
        return args.func(args)
    except (ConfigError, StorageError, DataError, SpaceError) as e:
        return _error(str(e))
    except KeyboardInterrupt:
        stored = (
            "; finished trials are stored" if args.verb in ("tune", "resume") else ""
        )
        print(f"\njaxhp: interrupted{stored}", file=sys.stderr)
        if argv is None:  # the jaxhp program: leave without tearing down JAX's threads
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except BrokenPipeError:
        # The reader went away (`jaxhp export db | head`): no traceback, and none from
        # the interpreter's own flush of stdout at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a process ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
