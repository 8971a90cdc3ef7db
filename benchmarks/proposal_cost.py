"""What a bayes proposal costs: kernel fit, posterior and acquisition timed separately.

For each history size n, dimension d and batch size q: the first call (compile included)
and the steady state (the same shapes again), in seconds. Uses the same jitted programs as
``strategies/bayes.py``, with its default options.

    python benchmarks/proposal_cost.py                       # the default grid
    python benchmarks/proposal_cost.py --n 1000 --d 6 --q 64 # the issue's 5-second check
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from runinfo import run_header  # noqa: E402

import jaxhp  # noqa: E402
from jaxhp.gp import fit as gpfit  # noqa: E402
from jaxhp.gp.kernels import dims_of  # noqa: E402
from jaxhp.strategies.bayes import _capacity, _programs, gp_bo  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


#: The bayes strategy's default options (what ``strategy="bayes"`` runs).
DEFAULTS = {
    k: p.default
    for k, p in inspect.signature(gp_bo).parameters.items()
    if p.default is not inspect.Parameter.empty
}


def measure(n, d, q, seed=0, options=DEFAULTS, compare_restarts=False):
    space = jaxhp.Space({f"x{i}": jaxhp.Float(0.0, 1.0) for i in range(d)})
    dims = dims_of(space)
    o = options
    fit_prog, condition, _, propose = _programs(
        dims,
        o["acquisition_function"],
        o["restarts"],
        o["fit_steps"],
        o["fit_method"],
        o["refine"],
        o["refine_steps"],
        o["prior"],
    )
    # "*_first" warps: the batch's Thompson samples use a second posterior.
    split = o["output_warp"].endswith("_first") and q > 1
    rng = np.random.default_rng(seed)
    cap = _capacity(n)
    x = np.zeros((cap, d))
    y = np.zeros(cap)
    mask = np.arange(cap) < n
    x[:n] = rng.random((n, d))
    y[:n] = np.sin(5 * x[:n]).sum(1) + 0.01 * rng.standard_normal(n)
    sub = min(n, 256)
    fcap = _capacity(sub)
    fx, fy, fmask = np.zeros((fcap, d)), np.zeros(fcap), np.arange(fcap) < sub
    fx[:sub], fy[:sub] = x[:sub], y[:sub]
    init = gpfit.prior_mean(d)
    key = jax.random.key(seed)
    out = {"n": n, "d": d, "q": q}
    with gpfit.x64():
        init = jax.tree.map(np.asarray, init)
        fit_only = jax.jit(
            lambda k, fx, fy, fm, p, restart_map="auto": gpfit.fit_kernel(
                dims,
                fx,
                gpfit.standardize(fy, fm)[0],
                fm,
                p,
                k,
                restarts=o["restarts"],
                steps=o["fit_steps"],
                method=o["fit_method"],
                prior=o["prior"],
                restart_map=restart_map,
            ),
            static_argnames="restart_map",
        )
        cond = jax.jit(
            lambda p, x, y, m: gpfit.posterior(
                dims, p, x, gpfit.standardize(y, m)[0], m
            )
        )
        for phase in ("first", "steady"):
            params, t_fit = timed(lambda: fit_only(key, fx, fy, fmask, init))
            gp, t_post = timed(lambda: cond(params, x, y, mask))
            if split:  # the unwarped posterior (here: the same targets; same cost)
                gp_b, t_post_b = timed(lambda: condition(params, x, y, mask))
                t_post += t_post_b
            else:
                gp_b = gp
            _, t_acq = timed(lambda: propose(gp, gp_b, key, q))

            def whole():
                params, gp = fit_prog(key, x, y, mask, fx, fy, fmask, init)
                gp_b = condition(params, x, y, mask) if split else gp
                return propose(gp, gp_b, key, q)

            _, t_all = timed(whole)
            out[phase] = {
                "fit_s": t_fit,
                "posterior_s": t_post,
                "acquisition_s": t_acq,
                "total_s": t_all,
            }
            if compare_restarts:  # the fit with its restarts vmapped, then mapped
                for m in ("vmap", "map"):
                    _, out[phase][f"fit_{m}_s"] = timed(
                        lambda m=m: fit_only(key, fx, fy, fmask, init, m)
                    )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="*", default=[10, 100, 1000, 2000])
    ap.add_argument("--d", type=int, nargs="*", default=[2, 6, 20])
    ap.add_argument("--q", type=int, nargs="*", default=[1, 64, 1024])
    ap.add_argument(
        "--compare-restarts",
        action="store_true",
        help="also time the kernel fit with its restarts vmapped and mapped",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    for d in args.d:
        for n in args.n:
            for q in args.q:
                rows.append(measure(n, d, q, compare_restarts=args.compare_restarts))
                r = rows[-1]
                print(
                    f"n={n} d={d} q={q}: steady total {r['steady']['total_s']:.3f}s "
                    f"(first {r['first']['total_s']:.1f}s)",
                    file=sys.stderr,
                    flush=True,
                )
    result = run_header("proposal_cost", bayes_options=DEFAULTS, rows=rows)
    print(json.dumps(result, indent=2))
    print(
        f"\n{'n':>5} {'d':>3} {'q':>5} {'fit s':>8} {'post s':>8} {'acq s':>8} "
        f"{'total s':>8} {'first call s':>13}"
    )
    for r in rows:
        s = r["steady"]
        print(
            f"{r['n']:>5} {r['d']:>3} {r['q']:>5} {s['fit_s']:>8.3f} {s['posterior_s']:>8.3f} "
            f"{s['acquisition_s']:>8.3f} {s['total_s']:>8.3f} {r['first']['total_s']:>13.1f}"
        )
    if args.compare_restarts:
        print("\nkernel fit, steady state: restarts vmapped / mapped (s)")
        for r in rows:
            s = r["steady"]
            print(
                f"n={r['n']} d={r['d']} q={r['q']}: "
                f"{s['fit_vmap_s']:.3f} / {s['fit_map_s']:.3f}"
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
