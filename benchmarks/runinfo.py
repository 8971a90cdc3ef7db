"""What every benchmark's result JSON starts with (imported by the scripts here)."""

from __future__ import annotations

import datetime
import os
import platform

import jax


def run_header(benchmark: str, **extra) -> dict:
    """The script, the date, the backend and hardware, the JAX version, then
    ``extra``: the first keys of each result JSON."""
    return {
        "benchmark": benchmark,
        "date": datetime.date.today().isoformat(),
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        **extra,
    }
