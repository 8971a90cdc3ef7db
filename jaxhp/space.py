"""Search spaces: parameter types, validation, sampling, grids and the unit-cube encoding.

A :class:`Space` is an ordered mapping of names to parameters. Strategies work in the unit
cube ``[0, 1]^D`` (one coordinate per non-fixed parameter); :meth:`Space.decode` maps a
population of points ``u: [P, D]`` to ``{name: [P] array}`` of native values, and
:meth:`Space.encode` goes back. Log-scaled parameters are uniform in log space, integers
and choices are decoded by binning, so every point of the cube is a valid configuration.

Values stay NumPy (float64) on the host: they are what gets recorded and shown. String
choices decode to the index into ``Choice.values``; numeric choices decode to the value.

Conditional parameters: ``when={"optimizer": "sgd"}`` (or ``{"n_layers": [2, 3]}``) makes
a parameter matter only to configurations whose other parameters take those values.
Elsewhere it is *inactive*: :meth:`Space.canonical` puts its coordinate at the middle
of its range (so configurations that differ only there are one point, to a grid and to
the GP), and :meth:`Space.to_python_all` leaves it out of the configuration, as Optuna's
define-by-run trials leave out what they never asked for.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Choice", "Fixed", "Float", "Int", "Space", "SpaceError"]


class SpaceError(ValueError):
    """A search space, or a value for it, is invalid."""


def _round_sig(v: np.ndarray, digits: int = 12) -> np.ndarray:
    """Round to ``digits`` significant digits, so grid values decode exactly (1e-3, not
    0.0010000000000000002) after the unit-cube round trip."""
    v = np.asarray(v, np.float64)
    mag = np.floor(np.log10(np.where(v == 0, 1.0, np.abs(v))))
    scale = 10.0 ** (digits - 1 - mag)
    return np.round(v * scale) / scale


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


#: Where an inactive parameter's unit-cube coordinate is put (:meth:`Space.canonical`).
INACTIVE_AT = 0.5


def _norm_when(when: Any) -> Any:
    """``{parent: value or values}`` as a hashable ``((parent, (values...)), ...)``;
    anything else is kept as given for :meth:`_Conditional._check_when` to refuse."""
    if not isinstance(when, Mapping):
        return when
    out = []
    for parent, vals in when.items():
        if isinstance(vals, (set, frozenset)):
            vals = tuple(sorted(vals, key=repr))
        elif isinstance(vals, (list, tuple, range)):
            vals = tuple(vals)
        else:
            vals = (vals,)
        out.append((parent, vals))
    return tuple(out)


class _Conditional:
    """``when``: the parameter is active only where every named parent takes one of the
    listed values (``None``: always)."""

    when: Any

    def __post_init__(self):
        object.__setattr__(self, "when", _norm_when(self.when))

    def _check_when(self, name: str) -> None:
        w = self.when
        if w is None:
            return
        ok = (
            isinstance(w, tuple)
            and w
            and all(isinstance(parent, str) and vals for parent, vals in w)
        )
        if not ok:
            raise SpaceError(
                f"{name}: when= takes a non-empty mapping of parameter names to a value "
                f"or a list of values, e.g. when={{'optimizer': 'sgd'}}; got {w!r}"
            )

    def __repr__(self) -> str:
        fields = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.name != "when" or self.when is not None
        ]
        if self.when is not None:
            fields[-1] = f"when={dict((k, list(v)) for k, v in self.when)!r}"
        return f"{type(self).__name__}({', '.join(fields)})"


@dataclass(frozen=True, repr=False)
class Float(_Conditional):
    """A continuous parameter in ``[low, high]``, uniform or log-uniform.

    Example:
        >>> lr = Float(1e-4, 1e-1, log=True)
        >>> momentum = Float(0.5, 0.99, when={"optimizer": "sgd"})
    """

    low: float
    high: float
    log: bool = False
    when: Any = None

    def _check(self, name: str) -> None:
        self._check_when(name)
        if not (_is_number(self.low) and _is_number(self.high)):
            raise SpaceError(
                f"{name}: Float bounds must be numbers, got {self.low!r}, {self.high!r}"
            )
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise SpaceError(
                f"{name}: Float bounds must be finite, got [{self.low}, {self.high}]"
            )
        if not self.low < self.high:
            raise SpaceError(
                f"{name}: empty or reversed range [{self.low}, {self.high}]; "
                "need low < high (use Fixed for a constant)"
            )
        if self.log and self.low <= 0:
            raise SpaceError(
                f"{name}: log=True needs positive bounds, got low={self.low}"
            )

    def _edges(self) -> tuple[float, float]:
        if self.log:
            return math.log(self.low), math.log(self.high)
        return float(self.low), float(self.high)

    def decode(self, u: np.ndarray) -> np.ndarray:
        a, b = self._edges()
        v = a + np.clip(u, 0.0, 1.0) * (b - a)
        v = np.exp(v) if self.log else v
        return np.clip(_round_sig(v), self.low, self.high)

    def encode(self, v: np.ndarray) -> np.ndarray:
        a, b = self._edges()
        v = np.asarray(v, np.float64)
        v = np.log(v) if self.log else v
        return np.clip((v - a) / (b - a), 0.0, 1.0)

    def grid(self, n: int) -> list[float]:
        if n == 1:
            return [float(self.decode(np.array([0.5]))[0])]
        return [float(x) for x in self.decode(np.linspace(0.0, 1.0, n))]

    def contains(self, v: Any) -> bool:
        return _is_number(v) and self.low <= v <= self.high


@dataclass(frozen=True, repr=False)
class Int(_Conditional):
    """An integer parameter in ``[low, high]`` (both included), uniform or log-uniform.

    Example:
        >>> width = Int(16, 512, log=True)
        >>> width_1 = Int(16, 512, log=True, when={"n_layers": [2, 3]})
    """

    low: int
    high: int
    log: bool = False
    when: Any = None

    def _check(self, name: str) -> None:
        self._check_when(name)
        for b in (self.low, self.high):
            if not (isinstance(b, numbers.Integral) and not isinstance(b, bool)):
                raise SpaceError(f"{name}: Int bounds must be integers, got {b!r}")
        if not self.low < self.high:
            raise SpaceError(
                f"{name}: empty or reversed range [{self.low}, {self.high}]; "
                "need low < high (use Fixed for a constant)"
            )
        if self.log and self.low <= 0:
            raise SpaceError(
                f"{name}: log=True needs positive bounds, got low={self.low}"
            )

    def _edges(self) -> tuple[float, float]:
        # Each integer owns the interval [k - 0.5, k + 0.5] (in log space when log=True).
        lo, hi = self.low - 0.5, self.high + 0.5
        return (math.log(lo), math.log(hi)) if self.log else (lo, hi)

    def decode(self, u: np.ndarray) -> np.ndarray:
        a, b = self._edges()
        v = a + np.clip(u, 0.0, 1.0) * (b - a)
        v = np.exp(v) if self.log else v
        return np.clip(np.rint(v), self.low, self.high).astype(np.int64)

    def encode(self, v: np.ndarray) -> np.ndarray:
        # The centre of the integer's bin, so decode(encode(k)) == k.
        a, b = self._edges()
        v = np.asarray(v, np.float64)
        lo, hi = v - 0.5, v + 0.5
        if self.log:
            lo, hi = np.log(lo), np.log(hi)
        return np.clip((0.5 * (lo + hi) - a) / (b - a), 0.0, 1.0)

    def grid(self, n: int) -> list[int]:
        span = self.high - self.low + 1
        if n >= span and not self.log:
            return list(range(self.low, self.high + 1))
        if self.log:
            pts = np.geomspace(self.low, self.high, n)
        else:
            pts = np.linspace(self.low, self.high, n)
        return sorted({int(round(p)) for p in pts})

    def contains(self, v: Any) -> bool:
        return isinstance(v, numbers.Integral) and self.low <= v <= self.high


@dataclass(frozen=True, repr=False)
class Choice(_Conditional):
    """One of a finite list of values (numbers, strings or booleans).

    Example:
        >>> opt = Choice(["adam", "sgd"])
        >>> batch = Choice([32, 64, 128])
    """

    values: tuple
    when: Any = None

    def __init__(self, values: Sequence[Any], when: Any = None):
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise SpaceError(f"Choice takes a list of values, got {values!r}")
        object.__setattr__(self, "values", tuple(values))
        object.__setattr__(self, "when", _norm_when(when))

    @property
    def numeric(self) -> bool:
        return all(_is_number(v) for v in self.values)

    def _check(self, name: str) -> None:
        self._check_when(name)
        if len(self.values) == 0:
            raise SpaceError(f"{name}: Choice needs at least one value")
        seen = set()
        for v in self.values:
            if v in seen:
                raise SpaceError(f"{name}: duplicate choice {v!r}")
            seen.add(v)
        kinds = {"number" if _is_number(v) else type(v).__name__ for v in self.values}
        if len(kinds) > 1:
            raise SpaceError(f"{name}: Choice mixes value types {sorted(kinds)}")
        if self.numeric and not all(math.isfinite(v) for v in self.values):
            raise SpaceError(f"{name}: Choice values must be finite")

    def decode(self, u: np.ndarray) -> np.ndarray:
        k = len(self.values)
        idx = np.clip(np.floor(np.clip(u, 0.0, 1.0) * k), 0, k - 1).astype(np.int64)
        if self.numeric:
            return np.asarray(self.values)[idx]
        return idx

    def index(self, v: Any) -> np.ndarray:
        """Indices of values ``v`` (values, or indices for string choices)."""
        v = np.asarray(v)
        if not self.numeric:
            return v.astype(np.int64)
        table = np.asarray(self.values)
        hits = v[..., None] == table
        if not hits.any(-1).all():
            raise SpaceError(f"value not among the choices {self.values}")
        return hits.argmax(-1)

    def encode(self, v: np.ndarray) -> np.ndarray:
        return (self.index(v) + 0.5) / len(self.values)

    def grid(self, n: int) -> list:
        return list(self.values)

    def contains(self, v: Any) -> bool:
        if self.numeric:
            return _is_number(v) and v in self.values
        return any(v == c and type(v) is type(c) for c in self.values)


@dataclass(frozen=True)
class Fixed:
    """A constant: part of every configuration, never searched.

    Example:
        >>> opt = Fixed("adamw")
    """

    value: Any

    def _check(self, name: str) -> None:
        if _is_number(self.value) and not math.isfinite(self.value):
            raise SpaceError(f"{name}: Fixed value must be finite, got {self.value!r}")

    @property
    def numeric(self) -> bool:
        return _is_number(self.value)


Param = Float | Int | Choice | Fixed


class Space(Mapping):
    """An ordered, validated set of named hyperparameters.

    Example:
        >>> space = Space(learning_rate=Float(1e-4, 1e-1, log=True), n_layers=Int(1, 4))
        >>> space.dim
        2
    """

    def __init__(self, params: Mapping[str, Param] | None = None, /, **kwargs: Param):
        merged = dict(params or {})
        for k, v in kwargs.items():
            if k in merged:
                raise SpaceError(f"{k}: given twice")
            merged[k] = v
        if not merged:
            raise SpaceError("the search space is empty")
        for name, p in merged.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise SpaceError(f"parameter name {name!r} must be a Python identifier")
            if not isinstance(p, (Float, Int, Choice, Fixed)):
                raise SpaceError(
                    f"{name}: expected Float, Int, Choice or Fixed, got {type(p).__name__} "
                    f"({p!r}); wrap a constant in Fixed(...)"
                )
            p._check(name)
        self._params: dict[str, Param] = merged
        self.searched: tuple[str, ...] = tuple(
            n for n, p in merged.items() if not isinstance(p, Fixed)
        )
        #: name -> ((parent, allowed decoded values), ...) for conditional parameters
        self._conds: dict[str, tuple[tuple[str, np.ndarray], ...]] = {
            n: self._conditions_of(n, p)
            for n, p in merged.items()
            if getattr(p, "when", None) is not None
        }
        # A parameter may not depend on itself, even through others.
        for n in self._conds:
            self._check_acyclic(n, ())

    def _conditions_of(self, name: str, p: Param) -> tuple[tuple[str, np.ndarray], ...]:
        out = []
        for parent, vals in p.when:
            if parent == name:
                raise SpaceError(f"{name}: when= names the parameter itself")
            if parent not in self._params:
                raise SpaceError(
                    f"{name}: when= names {parent!r}, which is not a parameter of this "
                    f"space ({list(self._params)})"
                )
            q = self._params[parent]
            if isinstance(q, Float):
                raise SpaceError(
                    f"{name}: when= names {parent!r}, a Float; a condition needs an Int, "
                    "a Choice or a Fixed parameter"
                )
            allowed = []
            for v in vals:
                if isinstance(q, Fixed):  # a condition it never meets: never active
                    ok = True
                    code = v if q.numeric else (0 if v == q.value else -1)
                else:
                    ok = q.contains(v)
                    string = isinstance(q, Choice) and not q.numeric
                    code = q.values.index(v) if ok and string else v  # as decoded
                if not ok:
                    raise SpaceError(
                        f"{name}: when={{{parent!r}: {v!r}}}: {v!r} is not a value of "
                        f"{parent} ({q!r})"
                    )
                allowed.append(code)
            out.append((parent, np.asarray(allowed)))
        return tuple(out)

    def _check_acyclic(self, name: str, path: tuple[str, ...]) -> None:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise SpaceError(f"{name}: its when= conditions form a cycle ({cycle})")
        for parent, _ in self._conds.get(name, ()):
            self._check_acyclic(parent, (*path, name))

    @property
    def conditional(self) -> tuple[str, ...]:
        """The parameters with a ``when=`` condition."""
        return tuple(self._conds)

    def conditions_of(self, name: str) -> tuple[tuple[str, np.ndarray], ...]:
        """``name``'s conditions: ``(parent, values)`` pairs, the values as
        :meth:`decode` gives them (a string choice's index); ``()`` for none."""
        return self._conds.get(name, ())

    def with_conditions(self, extra: Mapping[str, Mapping[str, Any]]) -> Space:
        """This space with ``extra`` conditions (``{name: when}``) given to parameters
        that have none of their own (a task's knowledge of which of its
        hyperparameters matter when; see ``Task.conditions``)."""
        params = dict(self._params)
        for name, when in extra.items():
            p = params.get(name)
            if p is not None and not isinstance(p, Fixed) and p.when is None:
                params[name] = dataclasses.replace(p, when=when)
        return self if params == self._params else Space(params)

    def active(self, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Which configurations of decoded ``values`` each parameter matters to:
        ``{name: [P] bool}`` (all True for an unconditional parameter)."""
        n = len(np.atleast_1d(values[next(iter(self._params))]))
        memo: dict[str, np.ndarray] = {}

        def act(name: str) -> np.ndarray:
            if name not in memo:
                a = np.ones(n, bool)
                for parent, allowed in self._conds.get(name, ()):
                    col = np.atleast_1d(np.asarray(values[parent]))
                    a = a & np.isin(col, allowed) & act(parent)
                memo[name] = a
            return memo[name]

        return {name: act(name) for name in self._params}

    def canonical(self, u: np.ndarray) -> np.ndarray:
        """Points ``u: [P, D]`` with each inactive parameter's coordinate at
        ``INACTIVE_AT``, so two configurations that differ only in parameters they do
        not use are the same point."""
        u = np.asarray(u, np.float64)
        if not self._conds or not len(u):
            return u
        act = self.active(self.decode(u))
        out = u.copy()
        for j, name in enumerate(self.searched):
            if name in self._conds:
                out[:, j] = np.where(act[name], u[:, j], INACTIVE_AT)
        return out

    # Mapping protocol
    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __iter__(self):
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"Space({inner})"

    @property
    def dim(self) -> int:
        """Number of encoded dimensions ``D`` (fixed parameters take none)."""
        return len(self.searched)

    # Stored form ---------------------------------------------------------------
    def to_data(self) -> dict[str, Any]:
        """The space as JSON-able data (what a study stores; :meth:`from_data` reads
        it back, validated like a space built in Python)::

            {"learning_rate": {"float": [1e-4, 0.1], "log": true},
             "optimizer": {"choice": ["adam", "sgd"]},
             "momentum": {"float": [0.5, 0.99], "when": {"optimizer": ["sgd"]}},
             "epochs": {"fixed": 20}}
        """
        out: dict[str, Any] = {}
        for name, p in self._params.items():
            if isinstance(p, Fixed):
                out[name] = {"fixed": p.value}
                continue
            if isinstance(p, Choice):
                d: dict[str, Any] = {"choice": list(p.values)}
            else:
                kind = "float" if isinstance(p, Float) else "int"
                d = {kind: [p.low, p.high], "log": bool(p.log)}
            if p.when is not None:
                d["when"] = {k: list(v) for k, v in p.when}
            out[name] = d
        return out

    @classmethod
    def from_data(cls, data: Any) -> Space:
        """The space :meth:`to_data` described (:class:`SpaceError` if malformed)."""
        if not isinstance(data, Mapping):
            raise SpaceError(
                f"a stored space must be a mapping, got {type(data).__name__}"
            )
        params: dict[str, Param] = {}
        for name, d in data.items():
            if not isinstance(d, Mapping):
                raise SpaceError(f"{name}: unreadable stored parameter {d!r}")
            kinds = [k for k in ("float", "int", "choice", "fixed") if k in d]
            extra = set(d) - {*kinds, "log", "when"}
            if len(kinds) != 1 or extra:
                raise SpaceError(f"{name}: unreadable stored parameter {d!r}")
            kind, when = kinds[0], d.get("when")
            v = d[kind]
            if kind == "fixed":
                params[name] = Fixed(v)
            elif kind == "choice":
                if not isinstance(v, list):
                    raise SpaceError(f"{name}: unreadable stored choice {v!r}")
                params[name] = Choice(v, when=when)
            else:
                if not (isinstance(v, list) and len(v) == 2):
                    raise SpaceError(f"{name}: unreadable stored bounds {v!r}")
                typ = Float if kind == "float" else Int
                params[name] = typ(
                    v[0], v[1], log=d.get("log", False) is True, when=when
                )
        return cls(params)

    # Encoding -----------------------------------------------------------------
    def decode(self, u: np.ndarray) -> dict[str, np.ndarray]:
        """Map unit-cube points ``u: [P, D]`` to ``{name: [P] array}`` of native values."""
        u = np.asarray(u, np.float64)
        if u.ndim != 2 or u.shape[1] != self.dim:
            raise SpaceError(f"expected points of shape [P, {self.dim}], got {u.shape}")
        out: dict[str, np.ndarray] = {}
        col = 0
        for name, p in self._params.items():
            if isinstance(p, Fixed):
                v = p.value if p.numeric else 0
                out[name] = np.full((u.shape[0],), v)
            else:
                out[name] = p.decode(u[:, col])
                col += 1
        return out

    def encode(self, values: Mapping[str, Any]) -> np.ndarray:
        """Map ``{name: [P] values}`` (as from :meth:`decode`) back to ``u: [P, D]``."""
        cols = [self._params[n].encode(np.atleast_1d(values[n])) for n in self.searched]
        if not cols:
            n = len(np.atleast_1d(next(iter(values.values()))))
            return np.zeros((n, 0))
        return np.stack(cols, axis=1)

    def to_python(self, values: Mapping[str, np.ndarray], i: int) -> dict[str, Any]:
        """Configuration ``i`` of decoded ``values`` as plain Python values."""
        (row,) = self.to_python_all(
            {n: np.asarray(values[n])[[i]] for n in self._params}
        )
        return row

    def to_python_all(self, values: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
        """Every configuration of decoded ``values`` as plain Python values, converted a
        column at a time: for a population of thousands, a loop of per-row
        conversions would be a visible part of the host's share of a GPU round."""
        cols: dict[str, list] = {}
        for name, p in self._params.items():
            col = np.atleast_1d(np.asarray(values[name]))
            if isinstance(p, Fixed):
                cols[name] = [p.value] * len(col)
            elif isinstance(p, Choice) and not p.numeric:
                cols[name] = [p.values[i] for i in col.astype(np.int64).tolist()]
            elif isinstance(p, Choice):
                cast = type(p.values[0]) if isinstance(p.values[0], int) else None
                cols[name] = [cast(v) for v in col.tolist()] if cast else col.tolist()
            elif isinstance(p, Int):
                cols[name] = [int(v) for v in col.tolist()]
            else:
                cols[name] = [float(v) for v in col.tolist()]
        names = list(cols)  # a space has at least one parameter
        rows = zip(*cols.values(), strict=True)
        out = [dict(zip(names, row, strict=True)) for row in rows]
        if self._conds:  # leave out what a configuration does not use
            act = self.active(values)
            for name in self._conds:
                for i in np.flatnonzero(~act[name]).tolist():
                    del out[i][name]
        return out

    def from_python(
        self, configs: Sequence[Mapping[str, Any]]
    ) -> dict[str, np.ndarray]:
        """Plain-value configurations to decoded ``{name: [P] array}``, validated.

        A conditional parameter may be left out of a configuration it does not matter
        to (as :meth:`to_python_all` leaves it out); it then takes its inactive value."""
        cols: dict[str, list] = {n: [] for n in self._params}
        missing: dict[str, list[int]] = {n: [] for n in self._conds}
        for row, cfg in enumerate(configs):
            unknown = set(cfg) - set(self._params)
            if unknown:
                raise SpaceError(
                    f"unknown parameter(s) {sorted(unknown)}; space has {list(self)}"
                )
            for name, p in self._params.items():
                if isinstance(p, Fixed):
                    v = cfg.get(name, p.value)
                    if not (v == p.value and _is_number(v) == _is_number(p.value)):
                        raise SpaceError(f"{name}: {cfg[name]!r} is not {p!r}")
                    cols[name].append(p.value if p.numeric else 0)
                    continue
                if name not in cfg and name in self._conds:
                    missing[name].append(row)
                    cols[name].append(self._inactive_value(name))
                    continue
                if name not in cfg:
                    raise SpaceError(f"{name}: missing from configuration {dict(cfg)}")
                v = cfg[name]
                if not p.contains(v):
                    raise SpaceError(f"{name}: {v!r} is outside {p!r}")
                cols[name].append(
                    p.values.index(v) if isinstance(p, Choice) and not p.numeric else v
                )
        out = {n: np.asarray(c) for n, c in cols.items()}
        if any(missing.values()):
            act = self.active(out)
            for name, rows in missing.items():
                for row in rows:
                    if act[name][row]:
                        raise SpaceError(
                            f"{name}: missing from configuration {dict(configs[row])}, "
                            "which it matters to"
                        )
        return out

    def _inactive_value(self, name: str) -> Any:
        """The decoded value an inactive ``name`` takes (its coordinate at
        ``INACTIVE_AT``)."""
        return self._params[name].decode(np.array([INACTIVE_AT]))[0]

    # Sampling -----------------------------------------------------------------
    def grid(
        self, points: int | Mapping[str, int | Sequence[Any]] = 5
    ) -> dict[str, np.ndarray]:
        """The Cartesian grid as decoded ``{name: [G] array}``, in lexicographic order.

        Args:
            points: points per numeric parameter (evenly spaced, in log space where
                ``log=True``), or a mapping from name to a count or an explicit list of
                values. Choices always contribute all of their values.
        """
        per: dict[str, int | Sequence[Any]] = {}
        if isinstance(points, Mapping):
            unknown = set(points) - set(self._params)
            if unknown:
                raise SpaceError(
                    f"grid points for unknown parameter(s) {sorted(unknown)}"
                )
            per = dict(points)
            default = 5
        else:
            default = points
        axes: list[list] = []
        for name in self.searched:
            p = self._params[name]
            spec = per.get(name, default)
            if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
                if spec < 1:
                    raise SpaceError(
                        f"{name}: grid needs at least one point, got {spec}"
                    )
                vals = p.grid(int(spec))
            else:
                vals = list(spec)
                if not vals:
                    raise SpaceError(f"{name}: empty list of grid values")
                for v in vals:
                    if not p.contains(v):
                        raise SpaceError(f"{name}: grid value {v!r} is outside {p!r}")
            axes.append(vals)
        combos = list(itertools.product(*axes)) if axes else [()]
        configs = [dict(zip(self.searched, c, strict=False)) for c in combos]
        grid = self.from_python(configs)
        if not self._conds:
            return grid
        # An inactive parameter takes one value, and the configurations that then
        # coincide are run once (the first of them keeps its place).
        act = self.active(grid)
        for name in self._conds:
            grid[name] = np.where(act[name], grid[name], self._inactive_value(name))
        keys = list(zip(*(grid[n].tolist() for n in self.searched), strict=True))
        first = sorted({k: i for i, k in reversed(list(enumerate(keys)))}.values())
        return {n: col[first] for n, col in grid.items()}

    def grid_size(self, points: int | Mapping[str, int | Sequence[Any]] = 5) -> int:
        return len(next(iter(self.grid(points).values())))
