"""A task's fold arrays on the device, placed once per task and placement."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["FoldArrays", "device_data", "fold_data"]


class FoldArrays(NamedTuple):
    x_train: jax.Array  # [F, N, ...]
    y_train: jax.Array  # [F, N, ...]
    n_train: jax.Array  # [F]
    x_val: jax.Array  # [F, V, ...]
    y_val: jax.Array  # [F, V, ...]
    val_mask: jax.Array  # [F, V]
    aux: Any  # [F, ...] or None


def fold_data(n_folds: int, arrays: tuple) -> tuple[tuple, int | None]:
    """Per-fold data arrays and the fold vmap's axis for them. With one fold the data
    enters unmapped, so batch gathers index a plain ``[N, ...]`` array (one gather kernel
    fewer per step than through a mapped fold axis of size one)."""
    if n_folds > 1:
        return arrays, 0
    return jax.tree.map(lambda v: v[0], arrays), None


def device_data(task: Any, sharding: Any = None, device: Any = None) -> FoldArrays:
    """The task's fold arrays on the device (or replicated with ``sharding``), cached
    on the task: every round and bucket of a sweep reads the same arrays."""
    cache = task.__dict__.setdefault("_jaxhp_device_data", {})
    key = (
        None
        if sharding is None
        else (tuple(d.id for d in sharding.mesh.devices.flat), sharding.spec)
    )
    if key not in cache:
        d = task.data
        host = FoldArrays(
            d.x_train, d.y_train, d.n_train, d.x_val, d.y_val, d.val_mask, d.aux
        )
        cache[key] = (
            jax.tree.map(jnp.asarray, host)
            if sharding is None
            else jax.device_put(host, sharding)
        )
    data = cache[key]
    if sharding is None and device is not None and device != jax.local_devices()[0]:
        data = jax.device_put(data, device)
    return data
