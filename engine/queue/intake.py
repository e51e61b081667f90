"""A worker's intake: claim or read job entries, validate them, start them.

Each turn of the worker loop calls :meth:`JobIntake.take` while slots are free: first
entries whose worker went silent for ``claim_idle_s`` (``XAUTOCLAIM``), then new ones
(``XREADGROUP``, blocking up to ``poll_s`` when the worker is idle). Each payload is
validated (``engine.queue.schema``) and checked against the policy
(``engine.queue.policy``); a bad one is dead-lettered with its reason and the worker
goes on. A good one is marked running (counting the attempt), resumes after its last
recorded frame, and is handed to ``run`` (the worker adds it to its frame path). No
payload, however hostile, raises out of here.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

import redis

from engine.config import QueueConfig
from engine.queue.connection import REDIS_ERRORS
from engine.queue.errors import InvalidJobError, JobRefusedError
from engine.queue.job import JobStatus, Mode
from engine.queue.keys import GROUP
from engine.queue.metrics import WorkerMetrics
from engine.queue.policy import SourcePolicy
from engine.queue.queue import Queue
from engine.queue.running import RunningJob
from engine.queue.schema import decode_payload

log = logging.getLogger(__name__)

FETCH_INTERVAL_S = 0.2
"""How often a worker with jobs in hand (and free slots) looks for new ones."""


class JobIntake:
    """Takes jobs for worker ``name`` (see the module doc).

    ``free()`` is the number of free slots, ``busy()`` whether the worker holds or is
    still stopping any job, ``run(job)`` starts a job taken, ``join()`` (re)creates the
    consumer group and the worker's place in it, ``since_outage()`` the seconds since
    this worker last got Redis back after an outage.

    After an outage no job is reclaimed for ``claim_idle_s``: while nobody could reach
    Redis no worker could renew its claims, so an entry's idle time says nothing about
    its worker then. Its worker renews it within ``heartbeat_s`` of Redis's return; one
    that does not is silent for real and loses the job a ``claim_idle_s`` later.
    """

    def __init__(
        self,
        client: redis.Redis,
        queue: Queue,
        qc: QueueConfig,
        name: str,
        metrics: WorkerMetrics,
        *,
        free: Callable[[], int],
        busy: Callable[[], bool],
        run: Callable[[RunningJob], None],
        join: Callable[[], None],
        since_outage: Callable[[], float] = lambda: float("inf"),
        burst: bool = False,
    ) -> None:
        self.redis = client
        self.queue = queue
        self.qc = qc
        self.name = name
        self.metrics = metrics
        self.policy = SourcePolicy.from_config(qc)
        self.free, self.busy, self.run, self.join = free, busy, run, join
        self.since_outage = since_outage
        self.burst = burst
        self.drained = False
        """True when the last look found nothing to claim and nothing new."""
        self._next_claim = self._next_fetch = 0.0
        self._claim_cursor = "0-0"

    def take(self) -> None:
        """Take jobs while slots are free: reclaimed ones first, then new ones."""
        if self.free() <= 0:
            return
        now = time.monotonic()
        claimed = 0
        idle = not self.busy()
        if now >= self._next_claim or (self.burst and idle):
            self._next_claim = now + self.qc.poll_s
            claimed = self._reclaim(self.free())
        if self.free() <= 0:
            return
        idle = not self.busy()
        if not idle and now < self._next_fetch:
            return
        self._next_fetch = now + FETCH_INTERVAL_S
        try:
            reply = self.redis.xreadgroup(
                GROUP,
                self.name,
                {self.queue.keys.jobs: ">"},
                count=self.free(),
                block=int(self.qc.poll_s * 1000) if idle else None,
            )
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            self._group_lost()
            return
        taken = 0
        for _, entries in reply or []:
            for entry, fields in entries:
                taken += 1
                self._start(entry.decode(), fields, reclaimed=False)
        self.drained = claimed == 0 and taken == 0

    def _group_lost(self) -> None:
        log.warning(
            "worker %s: the consumer group is gone (redis restarted without its data?); "
            "creating it again",
            self.name,
        )
        self.join()

    def _reclaim(self, count: int) -> int:
        """Take over up to ``count`` entries idle for ``claim_idle_s``."""
        if self.since_outage() < self.qc.claim_idle_s:
            return 0  # claims could not be renewed during the outage: give peers time
        try:
            cursor, entries, *rest = self.redis.xautoclaim(
                self.queue.keys.jobs,
                GROUP,
                self.name,
                min_idle_time=int(self.qc.claim_idle_s * 1000),
                start_id=self._claim_cursor,
                count=count,
            )
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            self._group_lost()
            return 0
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        for deleted in rest[0] if rest else []:
            log.warning(
                "worker %s: pending entry %s was deleted from the stream; dropped",
                self.name,
                deleted,
            )
        for entry, fields in entries:
            self._start(entry.decode(), fields or {}, reclaimed=True)
        return len(entries)

    def _start(self, entry: str, fields: dict[bytes, bytes], reclaimed: bool) -> None:
        """Start the job in ``entry``; no payload, however hostile, raises out of here."""
        try:
            self._start_job(entry, fields, reclaimed)
        except REDIS_ERRORS:
            raise  # the entry stays pending on this worker; reclaimed after claim_idle_s
        except Exception as error:
            log.exception("worker %s: starting entry %s failed", self.name, entry)
            self._reject(
                entry, f"the worker could not start it ({error!r})", None, fields.get(b"payload")
            )

    def _start_job(self, entry: str, fields: dict[bytes, bytes], reclaimed: bool) -> None:
        """Validate, mark running and start reading the job in ``entry``."""
        raw = fields.get(b"payload")
        try:
            spec = decode_payload(raw, self.qc.max_payload_bytes)
        except InvalidJobError as error:
            self._reject(entry, error.reason, error.job_id, raw)
            return
        live = SourcePolicy.is_live(spec.source)
        mode = spec.mode or (Mode(self.qc.live_mode) if live else Mode.LOSSLESS)
        try:
            self.policy.check(spec)
        except JobRefusedError as error:
            self._reject(entry, error.reason, spec.id, raw, spec.source)
            return
        started = self.queue.start(spec, entry, self.name, mode, live)
        extra = {"job": spec.id, "entry": entry, "worker": self.name}
        if started.action == "skip":
            log.info(
                "job %s is already %s; acknowledging its entry",
                spec.id,
                started.status,
                extra=extra,
            )
            self.queue.close(spec.id, entry)
            return
        if started.action == "duplicate":
            self._reject(
                entry, f"another entry ({started.status}) already runs job {spec.id}", None, raw
            )
            return
        if started.losses >= self.qc.max_worker_losses:
            last = started.error or "none reported"
            reason = (
                f"its workers stopped {started.losses} times in a row without recording a "
                "frame (killed, crashed or cut off): it may be what kills them; last error: "
                f"{last}"
            )
            log.error("job %s: %s", spec.id, reason, extra=extra)
            self.queue.dead_letter(
                entry,
                reason,
                started.attempts - 1,
                self.name,
                spec.id,
                raw,
                started.progress,
                spec.source,
            )
            self.metrics.jobs_dead.inc()
            self.metrics.jobs_finished.labels(JobStatus.FAILED.value).inc()
            return
        if reclaimed and started.was == JobStatus.RUNNING.value:
            self.metrics.jobs_reclaimed.inc()
            log.warning(
                "job %s reclaimed from %s, which went silent (attempt %d)",
                spec.id,
                started.previous_worker or "an unknown worker",
                started.attempts,
                extra=extra,
            )
        elif reclaimed:
            log.info(
                "job %s taken again after %s handed it back (attempt %d)",
                spec.id,
                started.previous_worker or "a worker",
                started.attempts,
                extra=extra,
            )
        elif spec.submitted:
            self.metrics.queue_wait.observe(max(0.0, time.time() - spec.submitted))
        history = started.progress or {}
        resumed = started.resume_from > 0
        held = RunningJob(
            key=f"{spec.id}#{started.attempts}-{uuid.uuid4().hex[:6]}",
            entry=entry,
            spec=spec,
            payload=raw,
            mode=mode,
            live=live,
            attempts=started.attempts,
            resume_from=started.resume_from,
            stored=started.resume_from - 1,
            failures_before=started.failures,
            epoch=started.epoch,
            frames_before=int(history.get("frames") or 0) if resumed else 0,
            dropped_before=int(history.get("dropped") or 0),
            lost_before=_counts(history.get("lost")),
        )
        self.run(held)
        log.info(
            "job %s started: %s (attempt %d, %s, from frame %d)",
            spec.id,
            held.display,
            held.attempts,
            mode.value,
            held.resume_from,
            extra={
                "job": spec.id,
                "entry": entry,
                "worker": self.name,
                "attempt": held.attempts,
                "resume_from": held.resume_from,
            },
        )

    def _reject(
        self,
        entry: str,
        reason: str,
        job_id: str | None,
        payload: object,
        source: str = "",
    ) -> None:
        """Dead-letter a job that must not run (malformed, refused)."""
        log.warning(
            "entry %s rejected: %s",
            entry,
            reason,
            extra={"job": job_id or "", "entry": entry, "worker": self.name},
        )
        self.queue.dead_letter(
            entry,
            reason,
            0,
            self.name,
            job_id,
            payload if isinstance(payload, bytes) else None,
            source=source,
        )
        self.metrics.jobs_dead.inc()


def _counts(value: object) -> dict[str, int]:
    """A progress map of counts as written by an earlier attempt (anything else: none)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int) and v >= 0}
