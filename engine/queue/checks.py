"""The worker's periodic look at the jobs in its hands: claims another worker took over
(reported by the heartbeat thread) and jobs an operator cancelled.

Both are stopped here at once; a reclaimed job is let go (its new worker owns it now),
a cancelled one is finished as ``cancelled``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import redis

from engine.queue.endings import JobEndings
from engine.queue.job import JobStatus
from engine.queue.keys import Keys
from engine.queue.metrics import WorkerMetrics
from engine.queue.running import RunningJob

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.5
"""How often a worker looks for cancelled jobs and lost claims."""


class JobChecks:
    """``jobs``: the worker's jobs in hand by key; ``count_live`` refreshes a job's
    live counters (dropped frames, reconnections) before it is read."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        name: str,
        metrics: WorkerMetrics,
        endings: JobEndings,
        jobs: Mapping[str, RunningJob],
        count_live: Callable[[RunningJob], None],
    ) -> None:
        self.redis, self.keys, self.name, self.metrics = client, keys, name, metrics
        self.endings, self.jobs, self.count_live = endings, jobs, count_live
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._next = 0.0

    def lost(self, entry: str) -> None:
        """The heartbeat found the claim of ``entry`` held by another worker (any thread)."""
        with self._lock:
            self._lost.add(entry)

    def run(self) -> None:
        """Stop reclaimed and cancelled jobs (at most every :data:`CHECK_INTERVAL_S`)."""
        now = time.monotonic()
        if now < self._next or not self.jobs:
            return
        self._next = now + CHECK_INTERVAL_S
        with self._lock:
            lost, self._lost = self._lost, set()
        for held in [h for h in self.jobs.values() if h.entry in lost]:
            self.endings.forget(held, stop_source=True)
            self.metrics.jobs_released.labels("lost").inc()
            log.warning(
                "job %s: another worker reclaimed it; stopping it here",
                held.spec.id,
                extra={"job": held.spec.id, "worker": self.name},
            )
        helds = list(self.jobs.values())
        pipe = self.redis.pipeline(transaction=False)
        for held in helds:
            pipe.hget(self.keys.job(held.spec.id), "status")
        for held, status in zip(helds, pipe.execute(), strict=True):
            self.count_live(held)
            if status == JobStatus.CANCELLED.value.encode():
                log.info(
                    "job %s was cancelled; stopping it", held.spec.id, extra={"job": held.spec.id}
                )
                self.endings.finish(held, JobStatus.CANCELLED)
