"""Plots of a study and a self-contained HTML report (``pip install "jaxhp[report]"``).

The plots are the ones people know from Optuna's visualization module and
optuna-dashboard: optimization history (every trial's value and the best so far),
parallel coordinates, learning curves coloured by status, hyperparameter importance and
one slice plot per hyperparameter. Each ``plot_*`` function takes a
:class:`~jaxhp.Results` and returns a matplotlib ``Figure``; :func:`write_report` puts
them, with a table of every trial, in one HTML file with the images embedded.

Importance is the mean decrease in impurity of a random forest fitted to the finished
trials (hyperparameters, encoded as in the search space, to the metric): Optuna's
``MeanDecreaseImpurityImportanceEvaluator``. It says which hyperparameters the metric
varied with in this study, not a causal effect.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
from typing import Any

import numpy as np

from jaxhp.results import Results, _fmt

__all__ = [
    "plot_history",
    "plot_importance",
    "plot_learning_curves",
    "plot_parallel_coordinates",
    "plot_slices",
    "write_report",
]

STATUS_COLORS = {
    "complete": "#1f77b4",
    "stopped": "#ff7f0e",
    "diverged": "#d62728",
    "failed": "#7f7f7f",
}


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            'plots and reports need matplotlib: pip install "jaxhp[report]"'
        ) from None
    return plt


def _searched(res: Results) -> list[str]:
    """Hyperparameters that vary across the study's trials."""
    if not res.trials:
        return []
    names = res.param_names()
    return [n for n in names if len({repr(t.params.get(n)) for t in res.trials}) > 1]


def _numeric(res: Results, name: str) -> tuple[np.ndarray, list | None, bool]:
    """Values of ``name`` per trial as floats, category labels (or None), log scale?
    A trial that does not use ``name`` (a ``when=`` condition) is NaN: not drawn."""
    vals = [t.params.get(name) for t in res.trials]
    used = [v for v in vals if v is not None]
    space = getattr(res, "space", None)
    p = space[name] if space is not None and name in space else None
    if all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in used
    ) and not (p is not None and hasattr(p, "values")):
        x = np.asarray([np.nan if v is None else v for v in vals], float)
        u = x[np.isfinite(x)]
        log = (
            bool(getattr(p, "log", False))
            if p is not None
            else (bool(np.all(u > 0)) and u.max() / max(u.min(), 1e-300) > 100)
        )
        return x, None, log
    cats = list(
        getattr(p, "values", None)
        or sorted({repr(v): v for v in used}.values(), key=repr)
    )
    index = {repr(c): i for i, c in enumerate(cats)}
    x = [np.nan if v is None else index[repr(v)] for v in vals]
    return np.asarray(x, float), cats, False


def _better(res: Results) -> Any:
    return np.fmax.accumulate if res.direction == "maximize" else np.fmin.accumulate


def plot_history(res: Results):
    """Every trial's value (by trial id, coloured by status) and the best so far."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ids = np.asarray([t.trial_id for t in res.trials])
    vals = np.asarray([t.value if t.ok else np.nan for t in res.trials])
    for status, color in STATUS_COLORS.items():
        m = np.asarray([t.status == status for t in res.trials])
        if m.any() and status in ("complete", "stopped"):
            ax.scatter(ids[m], vals[m], s=14, c=color, label=status, alpha=0.75)
    bad = [t for t in res.trials if not t.ok]
    if bad:
        lo = np.nanmin(vals) if np.isfinite(vals).any() else 0.0
        ax.scatter(
            [t.trial_id for t in bad],
            [lo] * len(bad),
            marker="x",
            c=STATUS_COLORS["diverged"],
            label=f"diverged/failed ({len(bad)}, drawn at the bottom)",
        )
    if np.isfinite(vals).any():
        filled = np.where(np.isfinite(vals), vals, np.nan)
        ax.plot(ids, _better(res)(filled), c="k", lw=1.6, label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(_int_locator())
    ax.set_ylabel(res.metric)
    ax.set_title("Optimization history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_parallel_coordinates(res: Results, top: int | None = None):
    """One line per finished trial across the hyperparameters, coloured by its value."""
    plt = _plt()
    names = _searched(res)
    ok = [i for i, t in enumerate(res.trials) if t.ok]
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * (len(names) + 1)), 4.4))
    if not names or not ok:
        ax.text(0.5, 0.5, "nothing to draw", ha="center", transform=ax.transAxes)
        return fig
    cols, labels = [], []
    for n in names:
        x, cats, log = _numeric(res, n)
        x = x[ok]
        if log:
            x = np.log10(x)
        used = x[np.isfinite(x)]  # NaN: trials the parameter does not matter to
        lo, hi = (float(used.min()), float(used.max())) if used.size else (0.0, 1.0)
        cols.append((x - lo) / (hi - lo) if hi > lo else np.full_like(x, 0.5))
        if cats is not None:
            labels.append(f"{n}\n{chr(10).join(str(c) for c in cats)}")
        else:
            span = (10**lo, 10**hi) if log else (lo, hi)
            labels.append(
                f"{n}\n{'log ' if log else ''}{_fmt(span[0])}\nto {_fmt(span[1])}"
            )
    vals = np.asarray([res.trials[i].value for i in ok])
    cols.append((vals - vals.min()) / (np.ptp(vals) or 1.0))
    labels.append(
        f"{res.metric}\n{_fmt(float(vals.min()))}\nto {_fmt(float(vals.max()))}"
    )
    data = np.stack(cols, 1)  # [trials, axes]
    order = np.argsort(vals if res.direction == "maximize" else -vals)  # best on top
    cmap = plt.get_cmap("viridis" if res.direction == "maximize" else "viridis_r")
    norm = plt.Normalize(vals.min(), vals.max())
    for i in order:
        ax.plot(range(data.shape[1]), data[i], c=cmap(norm(vals[i])), alpha=0.55, lw=1)
    ax.set_xticks(range(data.shape[1]))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_yticks([])
    for xpos in range(data.shape[1]):
        ax.axvline(xpos, c="0.6", lw=0.8)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=norm)
    fig.colorbar(sm, ax=ax, label=res.metric)
    ax.set_title("Parallel coordinates (each axis scaled to its range)")
    fig.tight_layout()
    return fig


def _validated(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (1-based) epochs with a validation value, and the values: with
    ``eval_every > 1`` the epochs in between hold NaN, which would break the lines."""
    keep = np.isfinite(y)
    return np.arange(1, y.size + 1)[keep], y[keep]


def plot_learning_curves(res: Results, max_trials: int = 200):
    """The validation metric per epoch of each trial, coloured by status."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    shown = res.trials[:max_trials]
    seen = set()
    for t in shown:
        y = np.asarray(t.curves.get("value", []), float)
        if y.size == 0:
            continue
        label = t.status if t.status not in seen else None
        seen.add(t.status)
        x, y = _validated(y)
        ax.plot(
            x,
            y,
            c=STATUS_COLORS.get(t.status, "k"),
            alpha=0.35 if t.status == "complete" else 0.6,
            lw=1,
            label=label,
        )
    best = res.best_trial
    if best is not None and "value" in best.curves:
        x, y = _validated(np.asarray(best.curves["value"], float))
        ax.plot(
            x,
            y,
            c="k",
            lw=2,
            label=f"best (trial {best.trial_id})",
        )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(_int_locator())
    ax.set_ylabel(f"validation {res.metric}")
    title = "Learning curves"
    if len(res.trials) > max_trials:
        title += f" (first {max_trials} of {len(res.trials)} trials)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if seen:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def importances(res: Results, seed: int = 0) -> dict[str, float]:
    """Mean decrease in impurity of a random forest from hyperparameters to the metric."""
    from sklearn.ensemble import RandomForestRegressor

    names = _searched(res)
    ok = [i for i, t in enumerate(res.trials) if t.ok]
    if not names or len(ok) < 4:
        return {}
    X = np.stack(
        [
            _impute((np.log10(x) if log else x)[ok])
            for x, _, log in (_numeric(res, n) for n in names)
        ],
        1,
    )
    y = np.asarray([res.trials[i].value for i in ok])
    forest = RandomForestRegressor(n_estimators=64, max_depth=64, random_state=seed)
    forest.fit(X, y)
    return dict(
        sorted(
            zip(names, forest.feature_importances_.tolist(), strict=True),
            key=lambda kv: -kv[1],
        )
    )


def _impute(x: np.ndarray) -> np.ndarray:
    """A column with its NaNs (trials a conditional parameter does not matter to) put
    one below its range, where a tree can split them off."""
    used = x[np.isfinite(x)]
    low = float(used.min()) - 1.0 if used.size else 0.0
    return np.where(np.isfinite(x), x, low)


def plot_importance(res: Results):
    plt = _plt()
    imp = importances(res)
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(len(imp), 2) + 1.2))
    if not imp:
        ax.text(
            0.5, 0.5, "too few finished trials", ha="center", transform=ax.transAxes
        )
        ax.set_axis_off()
        return fig
    names = list(imp)[::-1]
    ax.barh(names, [imp[n] for n in names], color="#1f77b4")
    for i, n in enumerate(names):
        ax.text(imp[n], i, f" {imp[n]:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (random-forest mean decrease in impurity)")
    ax.set_xlim(0, max(imp.values()) * 1.2)
    ax.set_title("Hyperparameter importance")
    fig.tight_layout()
    return fig


def plot_slices(res: Results):
    """The metric against each hyperparameter (one panel each), coloured by trial id."""
    plt = _plt()
    names = _searched(res)
    ok = [i for i, t in enumerate(res.trials) if t.ok]
    n = max(len(names), 1)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.3 * ncols, 2.9 * nrows),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    vals = np.asarray([res.trials[i].value for i in ok])
    ids = np.asarray([res.trials[i].trial_id for i in ok])
    for ax in axes.flat[len(names) :]:
        ax.set_axis_off()
    for ax, name in zip(axes.flat, names, strict=False):
        x, cats, log = _numeric(res, name)
        x = x[ok]
        if cats is not None:
            x = x + np.random.default_rng(0).uniform(-0.15, 0.15, x.size)
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels([str(c) for c in cats], fontsize=8)
        elif np.all(x == np.round(x)):
            ax.xaxis.set_major_locator(_int_locator())
        if log:
            from matplotlib.ticker import LogLocator, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(numticks=4))
            ax.xaxis.set_minor_formatter(NullFormatter())
        sc = ax.scatter(x, vals, c=ids, cmap="viridis", s=14, alpha=0.8)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(res.metric)
    if names and ok:
        fig.colorbar(sc, ax=axes, label="trial", shrink=0.8)
    fig.suptitle("Slices: the metric against each hyperparameter")
    return fig


def _int_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_report(res: Results, path: str, title: str | None = None) -> str:
    """Write one self-contained HTML file: summary, five plots (embedded), every trial."""
    title = title or f"jaxhp study {res.stats.get('study', '')}".strip()
    figures = [
        ("Optimization history", plot_history),
        ("Parallel coordinates", plot_parallel_coordinates),
        ("Learning curves", plot_learning_curves),
        ("Hyperparameter importance", plot_importance),
        ("Slices", plot_slices),
    ]
    imgs = [(name, _png(fn(res))) for name, fn in figures]
    counts = ", ".join(f"{v} {k}" for k, v in res.summary().items() if v) or "no trials"
    best = res.best_trial
    recs = res.records()
    head = list(recs[0]) if recs else []
    rows = "\n".join(
        f'<tr class="{html.escape(r["status"])}">'
        + "".join(f"<td>{html.escape(_fmt(r[k]))}</td>" for k in head)
        + "</tr>"
        for r in sorted(
            recs,
            key=lambda r: (
                (
                    not _ok(r[res.metric]),
                    -r[res.metric] if res.direction == "maximize" else r[res.metric],
                )
                if _ok(r[res.metric])
                else (True, 0)
            ),
        )
    )
    best_html = (
        "<p>Best: trial {} with {} = {} : <code>{}</code></p>".format(
            best.trial_id,
            html.escape(res.metric),
            _fmt(best.value),
            html.escape(", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())),
        )
        if best
        else "<p>No trial finished with a finite metric.</p>"
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0 1.5em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border-bottom: 1px solid #eee; padding: 2px 8px; text-align: right; }}
tr.diverged td, tr.failed td {{ color: #b22; }} tr.stopped td {{ color: #a60; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(res)} trials ({html.escape(counts)}); metric: {html.escape(res.metric)}
({res.direction}); strategy: {html.escape(str(res.stats.get("strategy")))};
generated {datetime.datetime.now().isoformat(timespec="seconds")}.</p>
<p>{html.escape(_work_line(res.stats))}</p>
{best_html}
{"".join(f'<h2>{html.escape(n)}</h2><img alt="{html.escape(n)}" src="data:image/png;base64,{b}">' for n, b in imgs)}
<h2>All trials</h2>
<table><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)
    return path


def _ok(v: Any) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def _work_line(stats) -> str:
    """The sweep's executed against useful work (``engine.work``), if recorded."""
    if not stats.get("work"):
        return ""
    from jaxhp.engine.work import describe

    return describe(stats["work"])
