"""Moving a population's small per-trial arrays between host and device.

A program call takes a dozen per-trial host arrays (hyperparameters, trial ids, masks)
and returns some thirty small ones (flags, per-epoch rows). On an accelerator the
number of transfers, not their bytes, is the cost at small populations, so both
directions travel packed into as few ``uint32`` vectors as possible, with bit casts:
the programs see the same values bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["HostRows", "fetch", "host_rows", "pack", "unpack", "unrows"]


@jax.tree_util.register_pytree_node_class
class HostRows:
    """A pytree of per-trial arrays (``[P, ...]``, 32-bit or boolean) packed as the
    columns of one ``uint32`` matrix ``words`` (``[P, C]``; float and integer leaves
    bit cast, booleans as 0/1). The layout is the pytree's static aux data, so it keys
    a program's compile cache as the shapes do. :func:`host_rows` packs on the host;
    :func:`unrows` undoes it inside a program (slices and bit casts that XLA fuses into
    their consumers)."""

    def __init__(self, words: Any, layout: tuple):
        self.words = words
        # (treedef, ((dtype name, first column, trailing shape), ...))
        self.layout = layout

    def tree_flatten(self):
        return (self.words,), self.layout

    @classmethod
    def tree_unflatten(cls, layout, children):
        return cls(children[0], layout)


def fits_word(dtype: Any) -> bool:
    """Whether a dtype's values travel as ``uint32`` words (bit casts, or booleans as
    0/1): the rule of both packings, :func:`host_rows` in and :func:`pack` out."""
    dt = np.dtype(dtype)
    return dt == np.bool_ or (dt.itemsize == 4 and dt.kind in "fiu")


def _packable(leaf: Any, p: int) -> bool:
    if not isinstance(leaf, (np.ndarray, jax.ShapeDtypeStruct)):
        return False  # a device array stays where it is
    return len(leaf.shape) >= 1 and leaf.shape[0] == p and fits_word(leaf.dtype)


def host_rows(tree: Any, enabled: bool = True) -> Any:
    """``tree`` (NumPy arrays or shapes, each ``[P, ...]``) as :class:`HostRows`, or
    ``tree`` itself when it cannot be packed (a device array, another dtype) or
    ``enabled`` is off (``EngineOptions.pack_host_rows``): the programs take either."""
    leaves, treedef = jax.tree.flatten(tree)
    if not enabled or not leaves:
        return tree
    p = (getattr(leaves[0], "shape", None) or (-1,))[0]
    if not all(_packable(leaf, p) for leaf in leaves):
        return tree
    cols, c = [], 0
    for leaf in leaves:
        cols.append((np.dtype(leaf.dtype).name, c, tuple(leaf.shape[1:])))
        c += math.prod(leaf.shape[1:])
    layout = (treedef, tuple(cols))
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves):
        return HostRows(jax.ShapeDtypeStruct((p, c), np.uint32), layout)
    words = np.empty((p, c), np.uint32)
    for leaf, (dt, c0, _) in zip(leaves, cols, strict=True):
        flat = np.ascontiguousarray(leaf).reshape(p, -1)
        n = flat.shape[1]
        words[:, c0 : c0 + n] = (
            flat.astype(np.uint32) if dt == "bool" else flat.view(np.uint32)
        )
    return HostRows(words, layout)


def unrows(x: Any) -> Any:
    """The pytree that :func:`host_rows` packed (in a program), or ``x`` unpacked."""
    if not isinstance(x, HostRows):
        return x
    treedef, cols = x.layout
    p = x.words.shape[0]
    leaves = []
    for dt, c0, trail in cols:
        w = x.words[:, c0 : c0 + math.prod(trail)].reshape((p, *trail))
        leaves.append(
            w != 0 if dt == "bool" else jax.lax.bitcast_convert_type(w, np.dtype(dt))
        )
    return jax.tree.unflatten(treedef, leaves)


def pack(layouts: MutableMapping, key: Any, tree: Any) -> dict[str, jax.Array]:
    """Concatenate ``tree``'s leaves, raveled, into as few vectors as possible (in the
    traced program): every 32-bit and boolean leaf into one ``uint32`` vector (bit casts,
    so nothing is rounded), any other dtype into a vector of its own. The layout to undo
    it is kept in ``layouts[key]`` at trace time (static shapes determine it)."""
    leaves, treedef = jax.tree.flatten(tree)
    groups: dict[str, list] = {}
    layout = []
    for leaf in leaves:
        dt = jnp.dtype(leaf.dtype)
        if dt == jnp.bool_:
            group_name, word = "u32", leaf.astype(jnp.uint32)
        elif fits_word(dt):
            group_name, word = "u32", jax.lax.bitcast_convert_type(leaf, jnp.uint32)
        else:
            group_name, word = dt.name, leaf
        group = groups.setdefault(group_name, [])
        layout.append((group_name, dt.name, sum(x.size for x in group), leaf.shape))
        group.append(jnp.ravel(word))
    layouts[key] = (treedef, layout)
    return {g: jnp.concatenate(v) for g, v in groups.items()}


def unpack(layouts: Mapping, key: Any, packed: Mapping[str, Any]) -> Any:
    """The host tree that :func:`pack` packed under ``key``, from its vectors (fetched
    here in one transfer)."""
    treedef, layout = layouts[key]
    packed = fetch(packed)

    def leaf(group_name, dt, off, shape):
        v = np.asarray(packed[group_name][off : off + math.prod(shape)])
        if group_name == "u32":
            v = v.astype(bool) if dt == "bool" else v.view(np.dtype(dt))
        return v.reshape(shape)

    return jax.tree.unflatten(treedef, [leaf(*spec) for spec in layout])


def fetch(tree: Any) -> Any:
    """Host copies of device arrays; across processes, every shard is gathered."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def get(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return jax.device_get(a)
        if a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(get, tree)
