"""The population engine: many trials trained in lockstep as one compiled program.

One concern a module: ``segment`` (the compiled epochs), ``programs`` (jitted programs
and their cache), ``population`` (the public :class:`Population`: slots, start, train,
refill, outcomes), ``planning`` (buckets and the cost model), ``memory`` (chunk
sizing), ``data`` (device placement), ``transfer`` (packed host-device transfers),
``shuffle``, ``outcomes``, ``options`` (per-platform choices); ``rounds`` and
``recycled`` are the two loops ``tune`` runs over :class:`Population`.
"""

from jaxhp.engine.options import CostModel, EngineOptions
from jaxhp.engine.outcomes import BestState, BucketReport, Outcomes, TrialOutcome
from jaxhp.engine.planning import plan_buckets
from jaxhp.engine.population import Population
from jaxhp.engine.programs import DEFAULT_CACHE, ProgramCache
from jaxhp.engine.recycled import run_recycled
from jaxhp.engine.rounds import run_population
from jaxhp.engine.segment import TRACE_COUNTS, RunState

__all__ = [
    "BestState",
    "BucketReport",
    "CostModel",
    "DEFAULT_CACHE",
    "EngineOptions",
    "Outcomes",
    "Population",
    "ProgramCache",
    "RunState",
    "TRACE_COUNTS",
    "TrialOutcome",
    "plan_buckets",
    "run_population",
    "run_recycled",
]
