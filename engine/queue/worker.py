"""A queue worker: jobs from Redis, their frames analysed together, records back to Redis.

:meth:`Worker.work` runs this loop until it is told to stop; each turn:

1. **Stop?** A signal (SIGTERM, SIGINT) or, in burst mode, an empty queue ends the loop.
2. **Take jobs** while fewer than ``concurrency`` are in hand: first jobs whose worker
   went silent for ``claim_idle_s`` (``XAUTOCLAIM``), then new ones (``XREADGROUP``,
   blocking up to ``poll_s`` when idle). Each payload is validated
   (``engine.queue.schema``) and checked against the policy (``engine.queue.policy``);
   a bad one is dead-lettered with its reason and the worker goes on. A good one is
   marked running (counting the attempt), resumes after its last recorded frame, and
   its source joins the frame path (``engine.framepath``) as a stream.
3. **Process** the next step of the frame path: a batch mixing the frames of every job
   in hand is analysed once and the Redis sink (``engine.queue.results_sink``) writes
   each job's records to its own results stream, in frame order, in one Redis round
   trip (a frame is never recorded twice); or a job whose source ended is finished,
   failed or retried.
4. **Check**, about twice a second, for cancelled jobs and claims the heartbeat lost.
5. **Maintain**, every ``trim_interval_s``: trim acknowledged jobs from the jobs stream,
   update the queue gauges, remove long-idle consumers that hold nothing.

Meanwhile a :class:`~engine.queue.heartbeat.Heartbeat` thread renews the claims of the
jobs in hand, so long and live jobs are not reclaimed while this worker lives.

**Failures.** A job whose input is wrong (missing or unreadable file, not video, a
path or scheme not allowed) fails at once and goes to the dead stream. A job that
fails otherwise (a feed that gives no frame, a model error on its frames) is handed
back for another try, and dead-lettered after ``max_attempts``; a worker that dies
counts as a failed attempt of each job it held. Redis outages are ridden out with
back-off: results are retried until written (so a frame is never skipped), file
readers wait, live feeds drop frames.

**Shutdown** (``finally``): jobs in hand are handed back at once without counting an
attempt (their next worker resumes after the last recorded frame; a live feed
resumes from *now*), results already computed are written, threads stop. A second
signal exits at once; jobs then stay pending until reclaimed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any, TypeVar

import redis

from engine.batching import Overflow, SourceEnded
from engine.config import Config
from engine.errors import SourceError, SourceTooLongError
from engine.framepath import FramePath, FramePathSettings, Stream
from engine.queue.backoff import RedisBackoff
from engine.queue.connection import REDIS_ERRORS
from engine.queue.endings import JobEndings
from engine.queue.errorlog import RepeatingErrors
from engine.queue.heartbeat import Heartbeat
from engine.queue.intake import JobIntake
from engine.queue.job import JobStatus, Mode
from engine.queue.job_source import job_frames, live_settings
from engine.queue.keys import GROUP
from engine.queue.maintenance import maintain
from engine.queue.metrics import MetricsServer, WorkerMetrics
from engine.queue.queue import Queue
from engine.queue.results import ResultWriter
from engine.queue.results_sink import RedisResultsSink
from engine.queue.running import RunningJob
from engine.sources.live import FeedUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECK_INTERVAL_S = 0.5
"""How often a worker looks for cancelled jobs and lost claims."""

PROCESS_WAIT_S = 0.2
"""Longest wait for the next batch before the loop turns again."""


def default_worker_name() -> str:
    """``host-pid-xxxx``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class Worker:
    """Consumes jobs from the queue on ``client`` with ``config`` (see the module doc).

    ``pipeline`` defaults to ``Pipeline.from_config(config)``; ``burst`` stops the
    worker when the queue is empty (rq's burst mode); ``metrics_port`` (default
    ``queue.metrics_port``; 0 = none) serves ``/metrics`` and ``/healthz``.
    """

    def __init__(
        self,
        client: redis.Redis,
        config: Config,
        pipeline: Any = None,
        name: str | None = None,
        burst: bool = False,
        metrics_port: int | None = None,
    ) -> None:
        from engine.pipeline import Pipeline  # torch: imported when a worker is made

        self.redis = client
        self.config = config
        self.qc = config.queue
        self.queue = Queue(client, config.queue)
        self.pipeline = pipeline or Pipeline.from_config(config)
        self.name = name or default_worker_name()
        self.burst = burst
        self.live_settings = live_settings(config)
        self.writer = ResultWriter(self.queue.keys, self.qc.results_max_len)
        self.metrics = WorkerMetrics(self.name)
        self._jobs: dict[str, RunningJob] = {}
        self._stopping: set[str] = set()
        """Muxer sources stopped whose reader has not ended yet (they hold a slot)."""
        self._lock = threading.Lock()
        self._lost: set[str] = set()
        self._lost_lock = threading.Lock()
        self._stop_reason: str | None = None
        self._tick = time.monotonic()
        self.errors = RepeatingErrors(log)
        self.backoff = RedisBackoff(self.name, self.metrics, lambda: bool(self._stop_reason))
        self.endings = JobEndings(
            self.queue, self.qc, self.name, self.metrics, self.backoff.retry, self._forget
        )
        self._next_check = 0.0
        self._next_maintain = time.monotonic() + self.qc.trim_interval_s
        self.heartbeat = Heartbeat(
            client,
            self.queue.keys,
            self.name,
            self.qc.heartbeat_s,
            entries=lambda: [h.entry for h in self._jobs.values()],
            on_lost=self._on_lost,
            healthy=self._loop_alive,
            lock=self._lock,
        )
        self.intake = JobIntake(
            client,
            self.queue,
            self.qc,
            self.name,
            self.metrics,
            free=self._free,
            busy=lambda: bool(self._jobs or self._stopping),
            run=self._run,
            join=self._join,
            burst=burst,
        )
        results = RedisResultsSink(
            client,
            self.queue.keys,
            self.writer,
            self._jobs,
            self.backoff.retry,
            self.endings.fail,
            self._count_live,
            self.metrics,
        )
        self.path = FramePath(
            self.pipeline,
            FramePathSettings.from_config(config, keep_open=True),
            [results],
            on_stream_error=self._analysis_failed,
        )
        port = self.qc.metrics_port if metrics_port is None else metrics_port
        self.metrics_server = MetricsServer(self.metrics, self.health, port) if port else None

    # --- the loop -----------------------------------------------------------------------

    def work(self, install_signals: bool = True) -> int:
        """Consume jobs until stopped; returns the exit status (0 for a graceful stop)."""
        if install_signals:
            self._install_signals()
        log.info(
            "worker %s starting: queue %s, group %s, concurrency %d",
            self.name,
            self.queue.keys.jobs,
            GROUP,
            self.qc.concurrency,
            extra={"worker": self.name, "burst": self.burst},
        )
        reason = "unknown"
        try:
            self.backoff.retry(self._join, "joining the consumer group")
            self.heartbeat.start()
            if self.metrics_server:
                self.metrics_server.start()
                log.info(
                    "worker %s: metrics on :%d/metrics, health on /healthz",
                    self.name,
                    self.metrics_server.port,
                )
            while True:
                self._tick = time.monotonic()
                reason = self._exit_reason()
                if reason:
                    break
                try:
                    self.intake.take()
                    self._process()
                    self._check_jobs()
                    self._maintain()
                    self.backoff.ok()
                except REDIS_ERRORS as error:
                    self.backoff.failed(error, "working")
                except Exception as error:  # a bug must not take the worker (and its jobs) down
                    self.errors.report(error, f"worker {self.name}: unexpected error; going on")
                    time.sleep(1.0)
            log.info("worker %s stopping: %s", self.name, reason, extra={"worker": self.name})
        except BaseException as error:
            reason = f"crashed: {error!r}"
            log.exception("worker %s %s", self.name, reason)
            raise
        finally:
            self._shutdown(reason)
        return 0

    def _join(self) -> None:
        """Create the group if needed and appear in it now (``veritas status`` lists it)."""
        self.queue.ensure_group()
        self.redis.xgroup_createconsumer(self.queue.keys.jobs, GROUP, self.name)

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to stop gracefully (thread-safe)."""
        self._stop_reason = self._stop_reason or reason

    def _exit_reason(self) -> str | None:
        if self._stop_reason:
            return self._stop_reason
        if self.burst and self.intake.drained and not self._jobs and not self._stopping:
            return "burst mode: no job left to take"
        return None

    # --- taking jobs --------------------------------------------------------------------

    def _free(self) -> int:
        return self.qc.concurrency - len(self._jobs) - len(self._stopping)

    def _run(self, held: RunningJob) -> None:
        """Hold a job the intake started and read its source through the frame path."""
        with self._lock:
            self._jobs[held.key] = held
        self.metrics.jobs_active.set(len(self._jobs))
        self.path.add(
            Stream(
                held.key,
                lambda: job_frames(self.config, self.live_settings, held),
                job=held.spec.id,
                overflow=Overflow.DROP_OLDEST if held.mode is Mode.REALTIME else Overflow.BLOCK,
                depth=self.qc.live_buffer_frames if held.live else None,
            )
        )
        log.info(
            "job %s started: %s (attempt %d, %s, from frame %d)",
            held.spec.id,
            held.display,
            held.attempts,
            held.mode.value,
            held.resume_from,
            extra={
                "job": held.spec.id,
                "entry": held.entry,
                "worker": self.name,
                "attempt": held.attempts,
                "resume_from": held.resume_from,
            },
        )

    # --- processing ---------------------------------------------------------------------

    def _process(self) -> None:
        if not self._jobs and not self._stopping:
            return
        step = self.path.step(PROCESS_WAIT_S)  # analysed and written by the Redis sink
        if isinstance(step, SourceEnded):
            self._ended(step)
        elif step is not None:
            for batch, result in step.parts:
                self.metrics.record_batch(len(batch), len(set(batch.streams)), result.timings_ms)

    def _analysis_failed(self, key: str, error: BaseException) -> None:
        """The frame path could not analyse this job's frames (the other jobs went on)."""
        held = self._jobs.get(key)
        if held is not None:
            self.endings.fail(held, f"analysing its frames failed: {error!r}")

    def _ended(self, ended: SourceEnded) -> None:
        if ended.source in self._stopping:
            self._stopping.discard(ended.source)
            return
        held = self._jobs.get(ended.source)
        if held is None:
            return
        held.dropped = ended.dropped
        self._count_live(held)
        error = ended.error
        if error is None:
            self.endings.finish(held, JobStatus.DONE)
        elif held.live and isinstance(error, SourceTooLongError):
            self.endings.finish(held, JobStatus.DONE, note="reached its max_duration_s")
        elif isinstance(error, SourceError) and not isinstance(error, FeedUnavailableError):
            self.endings.fail(
                held, str(error), retry=False, ended=True
            )  # the input itself is wrong
        else:
            reason = str(error) if isinstance(error, SourceError) else repr(error)
            self.endings.fail(held, reason, ended=True)

    # --- ending jobs --------------------------------------------------------------------

    def _forget(self, held: RunningJob, stop_source: bool) -> None:
        with self._lock:  # no heartbeat renews it after this
            self._jobs.pop(held.key, None)
        self.metrics.jobs_active.set(len(self._jobs))
        if stop_source:
            held.stop.set()
            self._stopping.add(held.key)
            self.path.stop(held.key)

    # --- checks and housekeeping --------------------------------------------------------

    def _on_lost(self, entry: str) -> None:
        with self._lost_lock:  # called from the heartbeat thread
            self._lost.add(entry)

    def _check_jobs(self) -> None:
        now = time.monotonic()
        if now < self._next_check or not self._jobs:
            return
        self._next_check = now + CHECK_INTERVAL_S
        with self._lost_lock:
            lost, self._lost = self._lost, set()
        for held in [h for h in self._jobs.values() if h.entry in lost]:
            self._forget(held, stop_source=True)
            self.metrics.jobs_released.labels("lost").inc()
            log.warning(
                "job %s: another worker reclaimed it; stopping it here",
                held.spec.id,
                extra={"job": held.spec.id, "worker": self.name},
            )
        helds = list(self._jobs.values())
        pipe = self.redis.pipeline(transaction=False)
        for held in helds:
            pipe.hget(self.queue.keys.job(held.spec.id), "status")
        for held, status in zip(helds, pipe.execute(), strict=True):
            self._count_live(held)
            if status == JobStatus.CANCELLED.value.encode():
                log.info(
                    "job %s was cancelled; stopping it", held.spec.id, extra={"job": held.spec.id}
                )
                self.endings.finish(held, JobStatus.CANCELLED)

    def _count_live(self, held: RunningJob) -> None:
        dropped = max(held.dropped, self.path.dropped(held.key))
        if dropped > held.dropped:
            self.metrics.dropped.inc(dropped - held.dropped)
            held.dropped = dropped
        reconnects = getattr(held.source, "reconnects", 0) or 0
        if reconnects > held.reconnects_counted:
            self.metrics.reconnects.inc(reconnects - held.reconnects_counted)
            held.reconnects_counted = reconnects

    def _maintain(self) -> None:
        now = time.monotonic()
        if now < self._next_maintain:
            return
        self._next_maintain = now + self.qc.trim_interval_s
        maintain(self.queue, self.qc, self.name, self.metrics)

    # --- health, signals, redis outages, shutdown ---------------------------------------

    def _loop_alive(self) -> bool:
        return time.monotonic() - self._tick < self.qc.stall_timeout_s

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, details)`` for ``/healthz``."""
        alive = self._loop_alive()
        redis_ok = self.backoff.up
        return alive and redis_ok, {
            "status": "ok" if alive and redis_ok else "unhealthy",
            "worker": self.name,
            "loop_age_s": round(time.monotonic() - self._tick, 3),
            "redis": "ok" if redis_ok else "unavailable",
            "jobs": len(self._jobs),
            "stopping": self._stop_reason,
        }

    def _install_signals(self) -> None:
        def handler(signum: int, frame: object) -> None:
            name = signal.Signals(signum).name
            if self._stop_reason:
                log.warning(
                    "worker %s: second %s; exiting now, its jobs stay pending and are "
                    "reclaimed after %.0f s",
                    self.name,
                    name,
                    self.qc.claim_idle_s,
                )
                os._exit(1)
            self._stop_reason = f"received {name}"

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _shutdown(self, reason: str) -> None:
        handed = 0
        self.heartbeat.stop()
        for held in list(self._jobs.values()):
            try:
                self.endings.hand_back(held)
                handed += 1
            except Exception as error:
                log.error(
                    "worker %s: could not hand back job %s (%r); it is reclaimed after %.0f s",
                    self.name,
                    held.spec.id,
                    error,
                    self.qc.claim_idle_s,
                )
        self.path.close()
        if self.metrics_server:
            self.metrics_server.stop()
        try:
            if self.queue.delete_idle_consumer(self.name, 0):
                log.debug("worker %s: left the consumer group", self.name)
        except Exception:
            pass  # it holds handed-back entries, or redis is gone: others clean up
        log.info(
            "worker %s stopped (%s): %d jobs ended here, %d handed back",
            self.name,
            reason,
            self.endings.done,
            handed,
            extra={"worker": self.name, "jobs_done": self.endings.done, "handed_back": handed},
        )
