"""Several hosts: JAX's multi-controller runtime, one jaxhp process per host.

Every process runs the same program: it asks the strategy for the same candidates (the
strategy is deterministic given the seed and the values told), trains its shard of each
population on its own devices, and receives every trial's results (gathered over the
processes), so all processes hold the same study. Only process 0 writes the storage and
prints progress.

Launch one process per host with the coordinator's address, the process count and the
process's index, either in code::

    jaxhp.distributed.initialize("10.0.0.1:9876", num_processes=2, process_id=0)

or through environment variables, which the ``jaxhp`` command reads::

    JAXHP_COORDINATOR=10.0.0.1:9876 JAXHP_NUM_PROCESSES=2 JAXHP_PROCESS_ID=0 jaxhp tune sweep.toml

(On GPU clusters managed by SLURM or Open MPI, ``jax.distributed.initialize()`` with no
arguments detects all three.) On CPUs, collectives go through gloo.
"""

from __future__ import annotations

import os

import jax

__all__ = ["initialize", "is_leader"]

ENV = ("JAXHP_COORDINATOR", "JAXHP_NUM_PROCESSES", "JAXHP_PROCESS_ID")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Join a multi-process run (arguments, else the ``JAXHP_*`` variables).

    Returns False (and does nothing) when neither arguments nor variables are given.
    Call it before anything else touches JAX's devices.
    """
    if coordinator_address is None:
        coordinator_address = os.environ.get("JAXHP_COORDINATOR")
        if coordinator_address is None:
            return False
        missing = [v for v in ENV[1:] if v not in os.environ]
        if missing:
            raise ValueError(
                f"JAXHP_COORDINATOR is set but {', '.join(missing)} is not: set all "
                f"of {', '.join(ENV)}"
            )
        num_processes = int(os.environ["JAXHP_NUM_PROCESSES"])
        process_id = int(os.environ["JAXHP_PROCESS_ID"])
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or not _has_accelerator():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    return True


def _has_accelerator() -> bool:
    # Without touching the backends (that would pin them before initialize): look for
    # the CUDA/ROCm plugins.
    import importlib.util

    return any(
        importlib.util.find_spec(m) is not None
        for m in ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin")
    )


def is_leader() -> bool:
    """True in process 0 (the one that writes storage and prints)."""
    return jax.process_index() == 0
