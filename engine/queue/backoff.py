"""Riding out Redis outages: retry with exponential back-off, log the outage once.

A worker never gives up on Redis while it runs: results are retried until written (so
no frame is skipped) and the loop waits with back-off, 0.1 s doubling to
:data:`REDIS_BACKOFF_MAX_S`. While it is stopping, it tries for
:data:`SHUTDOWN_REDIS_GRACE_S` more to hand its jobs back, then lets the error out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from engine.queue.connection import REDIS_ERRORS
from engine.queue.metrics import WorkerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")

REDIS_BACKOFF_MAX_S = 5.0
"""Longest wait between attempts while Redis is unreachable."""

SHUTDOWN_REDIS_GRACE_S = 10.0
"""While stopping, how long to keep trying an unreachable Redis to hand jobs back."""


class RedisBackoff:
    """The outage state of one worker's Redis connection.

    ``stopping()`` says whether the worker is stopping (the grace period applies then).
    """

    def __init__(self, worker: str, metrics: WorkerMetrics, stopping: Callable[[], bool]) -> None:
        self.worker = worker
        self.metrics = metrics
        self.stopping = stopping
        self.down_since: float | None = None
        """When Redis stopped answering (monotonic), None while it answers."""
        self.back_at = -float("inf")
        """When the last outage ended (monotonic)."""

    @property
    def up(self) -> bool:
        return self.down_since is None

    def failed(self, error: Exception, doing: str) -> None:
        """Redis failed while ``doing``: log the outage once, then wait (back-off)."""
        self.metrics.redis_errors.inc()
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning(
                "worker %s: redis unavailable while %s (%s); retrying with back-off",
                self.worker,
                doing,
                error,
            )
        if self.stopping() and now - self.down_since > SHUTDOWN_REDIS_GRACE_S:
            raise error
        down = now - self.down_since
        time.sleep(min(REDIS_BACKOFF_MAX_S, 0.1 * 2 ** min(down, 10)))

    def ok(self) -> None:
        """Redis answered: log the end of an outage."""
        if self.down_since is not None:
            log.info(
                "worker %s: redis is back after %.1f s",
                self.worker,
                time.monotonic() - self.down_since,
            )
            self.down_since = None
            self.back_at = time.monotonic()

    def since_outage(self) -> float:
        """Seconds since this worker's last outage of Redis ended (inf: none yet); 0.0
        while one has not been seen to end. The loop's first calls after an outage run
        before :meth:`ok` records its end: to them it has only just ended."""
        if self.down_since is not None:
            return 0.0
        return time.monotonic() - self.back_at

    def retry(self, call: Callable[[], T], doing: str) -> T:
        """``call()``, retried with back-off while Redis is unreachable."""
        while True:
            try:
                result = call()
            except REDIS_ERRORS as error:
                self.failed(error, doing)
                continue
            self.ok()
            return result
