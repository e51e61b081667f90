"""How a worker ends the jobs in its hands: done, failed (retried or dead-lettered), or
handed back on shutdown, and which of those the end of a job's source means
(:meth:`JobEndings.source_ended`). Each first lets go of the job (``forget``: no
heartbeat renews it, its source is stopped where it still runs), then records the
outcome in Redis, retried while Redis is unreachable.

**Failures.** A job whose input is wrong (missing or unreadable file, not video, a
path or scheme not allowed) fails at once and goes to the dead stream. A job that
fails otherwise (a feed that gives no frame, a model error on its frames) is handed
back for another try, and dead-lettered after ``max_attempts`` such failures. A worker
that dies is not a failure of its jobs: the next start counts the loss only when the
lost attempt recorded no frame, and ``max_worker_losses`` such losses in a row
dead-letter the job (``engine.queue.intake``). Redis outages are ridden out with
back-off: results are retried until written (so a frame is never skipped), file
readers wait, live feeds drop frames.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from engine.config import QueueConfig
from engine.errors import SourceError, SourceTooLongError
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
        failures = held.failures_before + 1
        if retry and failures < self.qc.max_attempts:
            log.warning(
                "job %s failed (failure %d of %d): %s; handing it back for a retry",
                held.spec.id,
                failures,
                self.qc.max_attempts,
                reason,
                extra=extra,
            )
            self.retry(
                lambda: self.queue.release(
                    held.spec.id,
                    held.entry,
                    self.name,
                    reason,
                    held.progress(),
                    failures=failures,
                ),
                "handing back a job",
            )
            self.metrics.jobs_released.labels("retry").inc()
            return
        if retry:
            reason = f"failed {failures} times; last: {reason}"
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

    def source_ended(self, held: RunningJob, error: BaseException | None) -> None:
        """The job's source ended, with ``error`` (None: it ran out of frames)."""
        # PyAV: only once a job ran. A feed that is down, or whose protocol this worker
        # cannot read (no ffmpeg for SRT), is retried: another attempt, or another
        # worker, may read it.
        from engine.sources.live import FeedNotSupportedError, FeedUnavailableError

        retried = (FeedUnavailableError, FeedNotSupportedError)

        if error is None:
            self.finish(held, JobStatus.DONE)
        elif held.live and isinstance(error, SourceTooLongError):
            self.finish(held, JobStatus.DONE, note="reached its max_duration_s")
        elif isinstance(error, SourceError) and not isinstance(error, retried):
            self.fail(held, str(error), retry=False, ended=True)  # the input itself is wrong
        else:
            reason = str(error) if isinstance(error, SourceError) else repr(error)
            self.fail(held, reason, ended=True)

    def hand_back_all(self, helds: list[RunningJob]) -> int:
        """Hand back every job in ``helds`` (shutdown); returns how many were."""
        handed = 0
        for held in helds:
            try:
                self.hand_back(held)
                handed += 1
            except Exception as error:
                log.error(
                    "worker %s: could not hand back job %s (%r); it is reclaimed after %.0f s",
                    self.name,
                    held.spec.id,
                    error,
                    self.qc.claim_idle_s,
                )
        return handed

    def hand_back(self, held: RunningJob, why: str = "shutdown") -> None:
        self.forget(held, stop_source=True)
        outcome = self.retry(
            lambda: self.queue.release(
                held.spec.id, held.entry, self.name, progress=held.progress(), handback=True
            ),
            "handing back a job",
        )
        self.metrics.jobs_released.labels(why).inc()
        log.info(
            "job %s handed back (%s) after %d frames; the next worker resumes %s",
            held.spec.id,
            outcome,
            held.written,
            "from now" if held.live else "after its last recorded frame",
            extra={"job": held.spec.id, "frames": held.written},
        )

    def rewind(self, held: RunningJob, stored: int) -> None:
        """Redis lost frames of ``held`` it had acknowledged (it restarted from older
        data): hand the job back, not counted as an attempt, so that its next start
        resumes after ``stored``, the last frame really there."""
        log.warning(
            "job %s: Redis lost frames %d to %d it had acknowledged (restarted from older "
            "data); handing the job back to resume from frame %d",
            held.spec.id,
            stored + 1,
            held.stored,
            stored + 1,
            extra={"job": held.spec.id, "stored": stored, "expected": held.stored},
        )
        self.hand_back(held, why="rewind")
