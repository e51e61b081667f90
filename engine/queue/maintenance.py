"""A worker's periodic housekeeping (every ``queue.trim_interval_s``): trim acknowledged
jobs from the jobs stream, update the queue gauges, remove consumers that have been idle
for ``queue.consumer_ttl_s`` and hold nothing (workers that died or were scaled away)."""

from __future__ import annotations

import logging
import time

from engine.config import QueueConfig
from engine.queue.metrics import WorkerMetrics
from engine.queue.queue import Queue

log = logging.getLogger(__name__)


class Maintenance:
    """Runs :func:`maintain` at most every ``queue.trim_interval_s`` (the first round one
    interval after start)."""

    def __init__(self, queue: Queue, qc: QueueConfig, name: str, metrics: WorkerMetrics) -> None:
        self.args = queue, qc, name, metrics
        self.interval = qc.trim_interval_s
        self._next = time.monotonic() + self.interval

    def run(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            maintain(*self.args)


def maintain(queue: Queue, qc: QueueConfig, name: str, metrics: WorkerMetrics) -> None:
    """One round of housekeeping by worker ``name``."""
    trimmed = queue.trim()
    if trimmed:
        log.debug("worker %s: trimmed %d acknowledged jobs", name, trimmed)
    group = queue.group() or {}
    metrics.queue_lag.set(int(group.get("lag") or 0))
    metrics.queue_pending.set(int(group.get("pending") or 0))
    for consumer in queue.consumers():
        if (
            consumer["name"] != name
            and consumer["pending"] == 0
            and consumer["idle_ms"] >= qc.consumer_ttl_s * 1000
            and queue.delete_idle_consumer(consumer["name"], qc.consumer_ttl_s)
        ):
            log.info("worker %s: removed idle consumer %s", name, consumer["name"])
