"""Per-step values summed up over the interval a scrape sees (pure but for a lock; no I/O).

Why: a gauge that holds the last step's value shows a rule one minibatch per scrape, and on a
healthy run single minibatches' gradient norms ranged 0.09-0.47 (5x) while nothing was clipped:
TempestGradNormUnstable fired for 72 minutes on noise.  Over the interval between two scrapes
(Prometheus scrapes every 5 s: METRICS_INTERVAL_S) the mean is steady and the min / max keep
the extremes, so no step goes unseen, however fast the learner steps.

    stats = IntervalStats(("loss", "grad_norm"), window_s=5.0)
    stats.add(loss=0.3, grad_norm=0.2)           # once per optimizer step
    stats.summary()  -> {"loss": Aggregate(min, max, mean, count), ...}

The window always holds the latest step, however old: a learner that stopped stepping shows its
last values (as the per-step gauges did), not NaN.  Thread-safe: steps are added by the learner's
loop, summaries taken by the metrics HTTP thread.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable, Iterable, NamedTuple


class Aggregate(NamedTuple):
    min: float
    max: float
    mean: float
    count: int


class IntervalStats:
    def __init__(self, names: Iterable[str], window_s: float, clock: Callable[[], float] = time.monotonic,
                 max_steps: int = 100_000):
        """max_steps bounds memory whatever the step rate (the oldest go first)."""
        self.names = tuple(names)
        self.window_s = window_s
        self.clock = clock
        self._steps: deque[tuple[float, tuple[float, ...]]] = deque(maxlen=max_steps)
        self._lock = threading.Lock()

    def add(self, **values: float) -> None:
        row = tuple(float(values[n]) for n in self.names)
        with self._lock:
            self._steps.append((self.clock(), row))

    def summary(self) -> dict[str, Aggregate] | None:
        """Min, max, mean and count of each value over the steps of the last window_s seconds
        (at least the latest step); None before the first step.  Non-finite values count in
        min / max / mean as IEEE says (a NaN makes the mean NaN: a rule must see it)."""
        with self._lock:
            if not self._steps:
                return None
            since = self.clock() - self.window_s
            while len(self._steps) > 1 and self._steps[0][0] < since:
                self._steps.popleft()
            rows = [row for _, row in self._steps]
        out = {}
        for i, name in enumerate(self.names):
            column = [row[i] for row in rows]
            if any(math.isnan(v) for v in column):
                out[name] = Aggregate(math.nan, math.nan, math.nan, len(column))
            else:
                out[name] = Aggregate(min(column), max(column), sum(column) / len(column), len(column))
        return out
