"""Errors of the job queue, each named after its condition (as rq's ``NoSuchJobError``).

They derive from :class:`~engine.errors.VeritasError`, carry the offending value, and
their one-line message says what to do. None of them ever holds a credential: URLs
are redacted before they reach a message.
"""

from __future__ import annotations

from engine.errors import VeritasError


class QueueError(VeritasError):
    """Base class of the queue's errors."""


class RedisUnavailableError(QueueError):
    """Redis cannot be reached (the URL in the message is redacted)."""

    def __init__(self, url: str, detail: str) -> None:
        self.url, self.detail = url, detail
        super().__init__(
            f"redis at {url} is unavailable ({detail}); check the URL, the password "
            "and that the server is up"
        )


class QueueFullError(QueueError):
    """``submit`` refused a job: the queue holds ``waiting`` jobs, at or over ``limit``."""

    def __init__(self, waiting: int, limit: int, adding: int = 1) -> None:
        self.waiting, self.limit, self.adding = waiting, limit, adding
        more = f", {adding} jobs asked for" if adding > 1 else ""
        super().__init__(
            f"the queue is full ({waiting} jobs waiting or running, limit {limit}{more}); "
            "nothing was enqueued: submit again later, add workers, or raise "
            "queue.max_queue_length"
        )


class NoSuchJobError(QueueError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"no such job {job_id!r}; check the id (finished jobs expire after queue.results_ttl_s)"
        )


class JobNotCancellableError(QueueError):
    def __init__(self, job_id: str, status: str) -> None:
        self.job_id, self.status = job_id, status
        super().__init__(f"job {job_id} is already {status}; only queued or running jobs cancel")


class InvalidJobError(QueueError):
    """A job payload is malformed: the reason names the field and what it must be."""

    def __init__(self, reason: str, job_id: str | None = None) -> None:
        self.reason, self.job_id = reason, job_id
        name = f"job {job_id}" if job_id else "job"
        super().__init__(f"invalid {name}: {reason}")


class JobRefusedError(QueueError):
    """A well-formed job asks for something this worker does not allow (a path outside
    the allowed roots, a URL scheme not allowed, too long a duration)."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id, self.reason = job_id, reason
        super().__init__(f"job {job_id} refused: {reason}")
