"""The ``jaxhp`` command line."""

from __future__ import annotations

import argparse
import json
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
    print(f"\nBest configuration (trial {result.best_trial.trial_id}):")
    print(json.dumps(result.best_params, indent=2))
    print(f"best validation accuracy: {result.best_value:.4f}")
    acc = float((result.predict(X) == y).mean())
    print(f"accuracy of its trained weights on all {len(X)} digits: {acc:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jaxhp",
        description="Tune neural-network hyperparameters by training populations of trials "
        "at once with JAX.",
    )
    parser.add_argument(
        "--version", action="store_true", help="print the version and exit"
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
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
        choices=["grid", "random", "sobol"],
        help="default sobol",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--top", type=int, default=10, help="rows of the results table")
    demo.add_argument(
        "--quiet", action="store_true", help="no per-round progress lines"
    )
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    if args.version:
        from jaxhp import __version__

        print(__version__)
        return 0
    if args.verb is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
