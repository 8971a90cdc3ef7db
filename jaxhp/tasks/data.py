"""Validation splits, k-fold cross-validation and per-fold normalisation, as stacked arrays.

Every split becomes a *fold*: a validation split is one fold, ``folds=k`` gives k. Folds are
stacked on a leading axis ``F`` (padded to the largest fold, with a row count and a mask),
so the engine runs them as one more batched axis. Inputs (and regression targets) are
standardised with statistics of each fold's own training rows, never its validation rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["DataError", "FoldData", "make_folds", "check_arrays"]


class DataError(ValueError):
    """Training data is unusable (shapes, NaN, too few rows or classes)."""


class FoldData(NamedTuple):
    """Folds stacked on axis ``F`` (host NumPy; the engine moves them to the device)."""

    x_train: np.ndarray  # [F, N, ...] standardised
    y_train: np.ndarray  # [F, N, ...]
    n_train: np.ndarray  # [F] real rows (the rest is padding)
    x_val: np.ndarray  # [F, V, ...]
    y_val: np.ndarray  # [F, V, ...]
    val_mask: np.ndarray  # [F, V] bool
    x_mean: np.ndarray  # [F, ...] input statistics of each fold's training rows
    x_std: np.ndarray  # [F, ...]
    aux: Any = None  # [F, ...] task extras (e.g. target scaling)

    @property
    def n_folds(self) -> int:
        return self.x_train.shape[0]


def check_arrays(X: Any, y: Any, *, name: str = "X") -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``X, y``: same length, numeric, finite, at least 2-D ``X``."""
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be numeric: {e}") from None
    y = np.asarray(y)
    if X.ndim < 2:
        raise DataError(f"{name} must have shape [rows, features...], got {X.shape}")
    if len(X) != len(y):
        raise DataError(f"{name} has {len(X)} rows but y has {len(y)}")
    if len(X) == 0:
        raise DataError(f"{name} has no rows")
    if X[0].size == 0:
        raise DataError(f"{name} has no features (shape {X.shape})")
    bad = ~np.isfinite(X).reshape(len(X), -1).all(1)
    if bad.any():
        raise DataError(
            f"{name} has NaN or Inf in {int(bad.sum())} row(s), first at row {int(bad.argmax())}; "
            "impute or drop them first"
        )
    y_name = "y" + name[1:]  # y, or y_val beside X_val
    if y.dtype.kind in "fc" and not np.isfinite(y).all():
        raise DataError(
            f"{y_name} has NaN or Inf at row "
            f"{int(np.argmax(~np.isfinite(y).reshape(len(y), -1).all(1)))}"
        )
    if y.dtype.kind == "O":  # e.g. a pandas column of labels with gaps
        gap = np.array(
            [v is None or (isinstance(v, float) and v != v) for v in y.reshape(-1)]
        ).reshape(len(y), -1)
        if gap.any():
            raise DataError(
                f"{y_name} has {int(gap.sum())} missing value(s) (None or NaN), first at row "
                f"{int(gap.any(1).argmax())}; drop those rows first"
            )
    return X, y


def _stratified_kfold(
    labels: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Fold id per row, each class dealt round-robin over the folds after a shuffle."""
    fold = np.empty(len(labels), np.int64)
    offset = 0
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        fold[rows] = (np.arange(len(rows)) + offset) % k
        offset += len(rows)  # keeps fold sizes balanced across classes
    return fold


def make_folds(
    X: np.ndarray,
    y: np.ndarray,
    *,
    val_fraction: float | None,
    folds: int | None,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
    stratify: bool,
    seed: int,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Split into ``[(x_train, y_train, x_val, y_val), ...]``, one tuple per fold."""
    given = sum(v is not None for v in (val_fraction, folds, X_val))
    if given != 1:
        raise DataError("give exactly one of val_fraction, folds or X_val/y_val")
    if X_val is not None:
        if y_val is None:
            raise DataError("X_val needs y_val")
        X_val, y_val = check_arrays(X_val, y_val, name="X_val")
        if X_val.shape[1:] != X.shape[1:]:
            raise DataError(
                f"X_val rows have shape {X_val.shape[1:]}, X rows {X.shape[1:]}"
            )
        return [(X, y, X_val, y_val)]
    rng = np.random.default_rng(seed)
    labels = y if stratify else np.zeros(len(y), np.int64)
    if folds is not None:
        if not isinstance(folds, (int, np.integer)) or folds < 2:
            raise DataError(f"folds must be an integer >= 2, got {folds!r}")
        if folds > len(y):
            raise DataError(f"folds={folds} but there are only {len(y)} rows")
        fold_of = _stratified_kfold(labels, folds, rng)
        return [
            (X[fold_of != f], y[fold_of != f], X[fold_of == f], y[fold_of == f])
            for f in range(folds)
        ]
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    # A stratified split: the first round(val_fraction * k) rows of each shuffled class.
    val = np.zeros(len(y), bool)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        val[rows[: int(round(val_fraction * len(rows)))]] = True
    if val.all() or not val.any():
        raise DataError(
            f"val_fraction={val_fraction} leaves no training or no validation rows"
        )
    return [(X[~val], y[~val], X[val], y[val])]


def _pad(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(a) for a in arrays)
    out = np.zeros((len(arrays), n, *arrays[0].shape[1:]), arrays[0].dtype)
    mask = np.zeros((len(arrays), n), bool)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
        mask[i, : len(a)] = True
    return out, mask


def stack_folds(
    splits: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    *,
    standardize: bool = True,
    aux: Any = None,
) -> FoldData:
    """Standardise each fold with its training statistics and stack them on axis ``F``."""
    xs_tr, xs_va, means, stds = [], [], [], []
    for x_tr, _, x_va, _ in splits:
        if standardize:
            # In float64: the squares of large float32 inputs overflow float32.
            x64 = np.asarray(x_tr, np.float64)
            mean = x64.mean(0)
            std = x64.std(0)
            std = np.where(std > 1e-8 * np.maximum(np.abs(mean), 1.0), std, 1.0)
        else:
            mean = np.zeros(x_tr.shape[1:], np.float64)
            std = np.ones(x_tr.shape[1:], np.float64)
        xs_tr.append(((x_tr - mean) / std).astype(np.float32))
        xs_va.append(((x_va - mean) / std).astype(np.float32))
        means.append(mean)
        stds.append(std)
    x_train, train_mask = _pad(xs_tr)
    y_train, _ = _pad([s[1] for s in splits])
    x_val, val_mask = _pad(xs_va)
    y_val, _ = _pad([s[3] for s in splits])
    return FoldData(
        x_train=x_train.astype(np.float32),
        y_train=y_train,
        n_train=train_mask.sum(1).astype(np.int32),
        x_val=x_val.astype(np.float32),
        y_val=y_val,
        val_mask=val_mask,
        x_mean=np.stack(means).astype(np.float32),
        x_std=np.stack(stds).astype(np.float32),
        aux=aux,
    )
