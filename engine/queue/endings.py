"""How a worker ends the jobs in its hands: done, failed (retried or dead-lettered), or
handed back on shutdown. Each first lets go of the job (``forget``: no heartbeat renews
it, its source is stopped where it still runs), then records the outcome in Redis,
retried while Redis is unreachable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from engine.config import QueueConfig
from engine.queue.job import JobStatus
from engine.queue.metrics import WorkerMetrics
from engine.queue.queue import Queue
from engine.queue.running import RunningJob

log = logging.getLogger(__name__)


class JobEndings:
    """``forget(job, stop_source)`` lets go of a job; ``retry(call, doing)`` is the
    worker's Redis back-off."""

    def __init__(
        self,
        queue: Queue,
        qc: QueueConfig,
        name: str,
        metrics: WorkerMetrics,
        retry: Callable[[Callable[[], Any], str], Any],
        forget: Callable[[RunningJob, bool], None],
    ) -> None:
        self.queue = queue
        self.qc = qc
        self.name = name
        self.metrics = metrics
        self.retry = retry
        self.forget = forget
        self.done = 0
        """Jobs that ended here (done, cancelled or failed for good)."""

    def finish(self, held: RunningJob, status: JobStatus, note: str = "") -> None:
        self.forget(held, stop_source=status is JobStatus.CANCELLED)
        final = self.retry(
            lambda: self.queue.finish(
                held.spec.id, held.entry, status, progress=held.progress(), source=held.spec.source
            ),
            "finishing a job",
        )
        self.done += 1
        self.metrics.jobs_finished.labels(final).inc()
        log.info(
            "job %s %s%s: %d frames recorded, %d dropped, %.1f s",
            held.spec.id,
            final,
            f" ({note})" if note else "",
            held.written,
            held.dropped,
            time.monotonic() - held.started,
            extra={
                "job": held.spec.id,
                "status": final,
                "frames": held.written,
                "dropped": held.dropped,
                "duplicates": held.duplicates,
            },
        )

    def fail(self, held: RunningJob, reason: str, retry: bool = True, ended: bool = False) -> None:
        """Retry the job elsewhere (``retry`` and attempts left), else dead-letter it.
        ``ended``: its source has already ended (else it is stopped)."""
        self.forget(held, stop_source=not ended)
        extra = {"job": held.spec.id, "attempt": held.attempts, "worker": self.name}
        if retry and held.attempts < self.qc.max_attempts:
            log.warning(
                "job %s failed (attempt %d of %d): %s; handing it back for a retry",
                held.spec.id,
                held.attempts,
                self.qc.max_attempts,
                reason,
                extra=extra,
            )
            self.retry(
                lambda: self.queue.release(
                    held.spec.id, held.entry, self.name, reason, held.progress()
                ),
                "handing back a job",
            )
            self.metrics.jobs_released.labels("retry").inc()
            return
        if retry:
            reason = f"failed {held.attempts} times; last: {reason}"
        log.error("job %s failed for good: %s", held.spec.id, reason, extra=extra)
        self.retry(
            lambda: self.queue.dead_letter(
                held.entry,
                reason,
                held.attempts,
                self.name,
                held.spec.id,
                held.payload,
                held.progress(),
                held.spec.source,
            ),
            "dead-lettering a job",
        )
        self.metrics.jobs_dead.inc()
        self.metrics.jobs_finished.labels(JobStatus.FAILED.value).inc()

    def hand_back(self, held: RunningJob) -> None:
        self.forget(held, stop_source=True)
        outcome = self.retry(
            lambda: self.queue.release(
                held.spec.id, held.entry, self.name, progress=held.progress(), handback=True
            ),
            "handing back a job",
        )
        self.metrics.jobs_released.labels("shutdown").inc()
        log.info(
            "job %s handed back (%s) after %d frames; the next worker resumes %s",
            held.spec.id,
            outcome,
            held.written,
            "from now" if held.live else "after its last recorded frame",
            extra={"job": held.spec.id, "frames": held.written},
        )
