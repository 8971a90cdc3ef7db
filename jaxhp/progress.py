"""Progress of a sweep: a live status line on a terminal, a plain line per round otherwise.

No dependency: on a terminal the line is redrawn in place (carriage return) after every
compiled segment; when the output is a file or a pipe (CI logs, ``nohup``), one line is
written per finished round.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

__all__ = ["Progress"]


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return (
        f"{s // 3600}h{s % 3600 // 60:02d}m"
        if s >= 3600
        else f"{s // 60}m{s % 60:02d}s"
    )


class Progress:
    """Counts trials done / running / stopped / diverged, best so far, rate and time left."""

    def __init__(
        self,
        n_trials: int,
        *,
        metric: str,
        direction: str,
        stream: IO[str] | None = None,
        live: bool | None = None,
        done: int = 0,
        best: float = math.nan,
        counts: dict[str, int] | None = None,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.live = (
            bool(getattr(self.stream, "isatty", lambda: False)())
            if live is None
            else live
        )
        self.n_trials = n_trials
        self.metric = metric
        self.maximize = direction == "maximize"
        self.done0 = done  # finished before this process started (resume)
        self.done = done
        self.running = 0
        self.best = best
        self.counts = dict(counts or {})
        self.t0 = time.perf_counter()
        self._width = 0
        self.rnd: int | None = None

    # ------------------------------------------------------------------ events
    def round_started(self, rnd: int, n: int) -> None:
        self.rnd, self.running = rnd, n
        if self.live:
            self._draw(f"round {rnd}: compiling/training {n} trials")

    def segment(self, bucket: Any, epoch: int) -> None:
        if self.live:
            self._draw(f"round {self.rnd}: bucket {bucket.key} at epoch {epoch}")

    def round_finished(self, trials: list[Any]) -> None:
        self.running = 0
        self.done += len(trials)
        for t in trials:
            self.counts[t.status] = self.counts.get(t.status, 0) + 1
            if t.ok and (
                math.isnan(self.best)
                or (t.value > self.best if self.maximize else t.value < self.best)
            ):
                self.best = t.value
        if self.live:
            self._draw("")
        else:
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.live and self._width:
            print(file=self.stream, flush=True)

    # ------------------------------------------------------------------ text
    def line(self, extra: str = "") -> str:
        elapsed = time.perf_counter() - self.t0
        new = self.done - self.done0
        rate = new / elapsed if elapsed > 0 else 0.0
        left = (self.n_trials - self.done) / rate if rate > 0 else math.inf
        stopped = self.counts.get("stopped", 0)
        diverged = self.counts.get("diverged", 0) + self.counts.get("failed", 0)
        parts = [
            f"round {self.rnd}" if self.rnd is not None else "",
            f"{self.done}/{self.n_trials} trials done",
            f"{self.running} running",
            f"{stopped} stopped",
            f"{diverged} diverged",
            f"best {self.metric} {self.best:.4g}",
            f"{rate:.2f} trials/s",
            f"{_duration(elapsed)} elapsed",
            f"{_duration(left) if self.done < self.n_trials else '0m00s'} left",
        ]
        return " | ".join(p for p in parts if p) + (f" | {extra}" if extra else "")

    def _draw(self, extra: str) -> None:
        text = self.line(extra)
        pad = max(self._width - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)
