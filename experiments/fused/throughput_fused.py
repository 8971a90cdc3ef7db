"""benchmarks/throughput.py with the fused step's arms beside the engine's own.

  engine_fused       the engine training ``fused_task.FusedMLPClassifier``: each step of
                     the population one Pallas kernel, weights on chip through the step
  engine_fused_bf16  the same with bf16 matmuls (``compute_dtype="bfloat16"``)

Every other arm and option is throughput.py's. On a CPU the kernel runs in Pallas's
interpreter: that exercises the code path, not its speed (use small populations)::

    python experiments/fused/throughput_fused.py --populations 1 64 1024 16384  # GPU
    python experiments/fused/throughput_fused.py --quick --populations 2        # CPU
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "benchmarks"))
sys.path.insert(0, HERE)

import throughput as tp  # noqa: E402
from fused_task import FusedMLPClassifier  # noqa: E402

tp.EXTRA_ENGINE_TASKS.update(
    engine_fused=lambda X, y, **kw: FusedMLPClassifier(X, y, **kw),
    engine_fused_bf16=lambda X, y, **kw: FusedMLPClassifier(
        X, y, compute_dtype="bfloat16", **kw
    ),
)

if __name__ == "__main__":
    tp.main()
