"""Python values and pytrees as data: tagged JSON plus arrays in an ``.npz`` file.

What a study stores besides its tables goes through here, so that reading it back runs
no code: no pickle, no ``eval``. A value becomes JSON in which every non-primitive is
tagged (``{"tuple": [...]}``, ``{"dict": {...}}``, ``{"array": "a3"}``, ...); its arrays
go into an ``.npz`` file read with ``np.load(allow_pickle=False)``, which refuses object
arrays. A ``NamedTuple`` (a strategy's state) is recorded by its qualified name and its
fields, and rebuilt only when that name is one of jaxhp's own state types
(``ALLOWED_TYPES``) or a type found in a template the caller built itself (a custom
strategy's ``init``): the name in a file never chooses the code that runs.

The tags (``tree`` blobs, ``__tree__`` is the JSON, the other members the arrays)::

    null, true, 1, 1.5, "text"               as themselves
    {"float": "nan" | "inf" | "-inf"}        a non-finite float
    {"tuple": [...]}, {"list": [...]}        sequences
    {"dict": {"k": ...}}                     a dict with string keys
    {"items": [[k, v], ...]}                 a dict with other keys
    {"array": "a0"}                          a NumPy (or device) array
    {"scalar": "a0"}                         a NumPy scalar (a 0-d array's item type)
    {"key": "a0", "impl": "threefry2x32"}    a JAX PRNG key array (its key data)
    {"objects": [...]}                       an object array of JSON-able values
    {"namedtuple": "module:Name", "fields": {...}}
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["SerialError", "dump_tree", "load_tree", "to_data", "from_data"]

TREE = "__tree__"


class SerialError(ValueError):
    """A value that cannot be stored as data, or stored data that cannot be read."""


def _qualname(t: type) -> str:
    return f"{t.__module__}:{t.__qualname__}"


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def allowed_types() -> dict[str, type]:
    """jaxhp's own state types, by qualified name: what a stored tree may rebuild."""
    from jaxhp.gp.kernels import KernelParams
    from jaxhp.strategies import EnqueuedState
    from jaxhp.strategies.bayes import BayesState
    from jaxhp.strategies.grid import GridState
    from jaxhp.strategies.random import RandomState
    from jaxhp.strategies.sobol import SobolState

    types = [EnqueuedState, BayesState, GridState, RandomState, SobolState]
    types.append(KernelParams)
    return {_qualname(t): t for t in types}


def _types_in(template: Any, out: dict[str, type]) -> dict[str, type]:
    """The NamedTuple types found in ``template`` (a value the caller built)."""
    if _is_namedtuple(template):
        out.setdefault(_qualname(type(template)), type(template))
    if isinstance(template, (list, tuple)):
        for x in template:
            _types_in(x, out)
    elif isinstance(template, Mapping):
        for x in template.values():
            _types_in(x, out)
    return out


def to_data(x: Any, arrays: dict[str, np.ndarray], where: str = "value") -> Any:
    """``x`` as tagged JSON; its arrays are added to ``arrays`` (name -> array)."""
    import jax

    def add(a: np.ndarray) -> str:
        name = f"a{len(arrays)}"
        arrays[name] = a
        return name

    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return x if math.isfinite(x) else {"float": repr(x)}
    if isinstance(x, jax.Array):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(x))
            return {"key": add(data), "impl": str(jax.random.key_impl(x))}
        x = np.asarray(x)
    if isinstance(x, np.generic):
        if x.dtype.kind == "O":
            raise SerialError(f"{where}: an object scalar cannot be stored as data")
        return {"scalar": add(np.asarray(x))}
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "O":
            return {"objects": [to_data(v, arrays, where) for v in x.tolist()]}
        return {"array": add(np.ascontiguousarray(x))}
    if _is_namedtuple(x):
        return {
            "namedtuple": _qualname(type(x)),
            "fields": {
                f: to_data(getattr(x, f), arrays, f"{where}.{f}") for f in x._fields
            },
        }
    if isinstance(x, tuple):
        return {"tuple": [to_data(v, arrays, where) for v in x]}
    if isinstance(x, list):
        return {"list": [to_data(v, arrays, where) for v in x]}
    if isinstance(x, Mapping):
        if all(isinstance(k, str) for k in x):
            return {
                "dict": {k: to_data(v, arrays, f"{where}.{k}") for k, v in x.items()}
            }
        return {
            "items": [
                [to_data(k, arrays, where), to_data(v, arrays, where)]
                for k, v in x.items()
            ]
        }
    raise SerialError(
        f"{where}: a {type(x).__module__}.{type(x).__qualname__} cannot be stored as "
        "data (arrays, numbers, strings, lists, dicts and NamedTuples can)"
    )


def from_data(
    node: Any,
    arrays: Mapping[str, np.ndarray],
    types: Mapping[str, type] | None = None,
) -> Any:
    """The value :func:`to_data` recorded; a NamedTuple only of a type in ``types``."""
    types = types or {}
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise SerialError(f"unreadable stored value {str(node)[:80]!r}")

    def array(name: Any) -> np.ndarray:
        if not isinstance(name, str) or name not in arrays:
            raise SerialError(f"stored value names a missing array {name!r}")
        return arrays[name]

    if "float" in node:
        if node["float"] not in ("nan", "inf", "-inf"):
            raise SerialError(f"unreadable stored float {node['float']!r}")
        return float(node["float"])
    if "array" in node:
        return array(node["array"])
    if "scalar" in node:
        return array(node["scalar"])[()]
    if "key" in node:
        import jax

        impl = node.get("impl")
        if not isinstance(impl, str):
            raise SerialError("a stored PRNG key has no implementation name")
        try:
            return jax.random.wrap_key_data(array(node["key"]), impl=impl)
        except (TypeError, ValueError) as e:
            raise SerialError(f"unreadable stored PRNG key ({e})") from None
    if "objects" in node:
        out = np.empty(len(node["objects"]), object)
        out[:] = [from_data(v, arrays, types) for v in node["objects"]]
        return out
    if "tuple" in node:
        return tuple(from_data(v, arrays, types) for v in _seq(node["tuple"]))
    if "list" in node:
        return [from_data(v, arrays, types) for v in _seq(node["list"])]
    if "dict" in node:
        d = node["dict"]
        if not isinstance(d, dict):
            raise SerialError("unreadable stored dict")
        return {k: from_data(v, arrays, types) for k, v in d.items()}
    if "items" in node:
        out = {}
        for kv in _seq(node["items"]):
            if not isinstance(kv, list) or len(kv) != 2:
                raise SerialError("unreadable stored mapping")
            out[from_data(kv[0], arrays, types)] = from_data(kv[1], arrays, types)
        return out
    if "namedtuple" in node:
        name, fields = node["namedtuple"], node.get("fields")
        cls = types.get(name) if isinstance(name, str) else None
        if cls is None:
            raise SerialError(
                f"stored state of type {name!r}, which is not one of jaxhp's own "
                "state types (a custom strategy's state is read with that strategy)"
            )
        if not isinstance(fields, dict) or set(fields) - set(cls._fields):
            raise SerialError(f"stored {name} has fields other than {cls._fields}")
        try:
            return cls(**{k: from_data(v, arrays, types) for k, v in fields.items()})
        except TypeError as e:
            raise SerialError(f"stored {name}: {e}") from None
    raise SerialError(f"unreadable stored value {str(node)[:80]!r}")


def _seq(v: Any) -> list:
    if not isinstance(v, list):
        raise SerialError("unreadable stored sequence")
    return v


def dump_tree(x: Any, where: str = "value") -> bytes:
    """``x`` as an ``.npz`` file: ``__tree__`` holds the tagged JSON, the other members
    the arrays."""
    arrays: dict[str, np.ndarray] = {}
    return dump_doc(to_data(x, arrays, where), arrays)


def dump_doc(value: Any, arrays: Mapping[str, np.ndarray]) -> bytes:
    """Tagged JSON ``value`` (from :func:`to_data`) and its arrays as an ``.npz``."""
    buf = io.BytesIO()
    np.savez(buf, **{TREE: np.asarray(json.dumps({"value": value}))}, **arrays)
    return buf.getvalue()


def read_tree(blob: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON document and the arrays of a :func:`dump_tree` blob (no code runs:
    object arrays are refused)."""
    if not isinstance(blob, bytes):
        raise SerialError("not a stored tree (expected bytes)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise SerialError(f"not a readable .npz tree ({e})") from None
    text = arrays.pop(TREE, None)
    if text is None or text.dtype.kind != "U" or text.ndim != 0:
        raise SerialError("a stored tree without its __tree__ entry")
    try:
        doc = json.loads(str(text[()]))
    except ValueError as e:
        raise SerialError(f"a stored tree's __tree__ is not JSON ({e})") from None
    if not isinstance(doc, dict) or "value" not in doc:
        raise SerialError("a stored tree's __tree__ has no value")
    return doc, arrays


def load_tree(blob: bytes, template: Any = None) -> Any:
    """The value :func:`dump_tree` stored. NamedTuples are rebuilt from jaxhp's own
    types and from those found in ``template`` (a value built by the caller)."""
    doc, arrays = read_tree(blob)
    types = {**allowed_types(), **_types_in(template, {})}
    return from_data(doc["value"], arrays, types)
