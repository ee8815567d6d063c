"""Counters and latency percentiles for /diagnostics, shared by the node's threads."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np


class PipelineStats:
    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self._latencies: collections.deque[float] = collections.deque(maxlen=window)
        self.counts = collections.Counter()
        self.last_error = ""
        # monotonic times
        self._failures: collections.deque[float] = collections.deque(maxlen=10_000)
        self._last_report = (time.monotonic(), collections.Counter())

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def error(self, what: str, message: str) -> None:
        with self._lock:
            self.counts[what] += 1
            self.last_error = message
            self._failures.append(time.monotonic())

    def latency(self, ms: float) -> None:
        with self._lock:
            self._latencies.append(ms)

    def snapshot(self, recent_s: float = 10.0) -> dict:
        """
        Return totals, rates since the previous snapshot, latency percentiles over the window.

        And how many failures happened in the last ``recent_s`` seconds (status follows these,
        not totals).
        """
        now = time.monotonic()
        with self._lock:
            recent = sum(1 for t in self._failures if now - t <= recent_s)
            counts = collections.Counter(self.counts)
            lat = np.array(self._latencies) if self._latencies else None
            then, before = self._last_report
            self._last_report = (now, counts)
            last_error = self.last_error
        dt = max(now - then, 1e-9)
        return {
            "counts": dict(counts),
            "rates_hz": {k: (counts[k] - before[k]) / dt for k in ("received", "processed")},
            "latency_ms": (
                {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95))}
                if lat is not None
                else None
            ),
            "last_error": last_error,
            "recent_failures": recent,
        }
