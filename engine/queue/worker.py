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

**Failures** are told apart in ``engine.queue.endings``: a wrong input fails at once, a
failure that may pass is retried; Redis outages are ridden out with back-off
(``engine.queue.backoff``): results are retried until written.

**Shutdown** (``finally``): jobs in hand are handed back at once without counting an
attempt (their next worker resumes after the last recorded frame; a live feed
resumes from *now*), results already computed are written, threads stop. A second
signal exits at once; jobs then stay pending until reclaimed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import msgpack
import redis

from engine.batching import Overflow, SourceEnded
from engine.config import Config
from engine.events import EventSink
from engine.framepath import FramePath, FramePathSettings, Stream
from engine.queue.backoff import RedisBackoff
from engine.queue.checks import JobChecks
from engine.queue.connection import REDIS_ERRORS
from engine.queue.endings import JobEndings
from engine.queue.errorlog import RepeatingErrors
from engine.queue.heartbeat import Heartbeat
from engine.queue.intake import JobIntake
from engine.queue.job import Mode
from engine.queue.job_source import job_frames
from engine.queue.keys import GROUP
from engine.queue.maintenance import Maintenance
from engine.queue.metrics import MetricsServer, WorkerMetrics
from engine.queue.queue import Queue
from engine.queue.results import ResultWriter
from engine.queue.results_sink import RedisResultsSink
from engine.queue.running import RunningJob
from engine.queue.signals import install_stop_signals
from engine.sources.live import live_settings

log = logging.getLogger(__name__)

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
        if pipeline is None:
            pipeline = Pipeline.from_config(config)
            pipeline.warm_start()  # no job's first frames wait for a compilation
        self.pipeline = pipeline
        self.name = name or default_worker_name()
        self.burst = burst
        self.live_settings = live_settings(config.queue)
        self.writer = ResultWriter(self.queue.keys, self.qc.results_max_len)
        self.metrics = WorkerMetrics(self.name)
        self._jobs: dict[str, RunningJob] = {}
        self._stopping: set[str] = set()
        """Muxer sources stopped whose reader has not ended yet (they hold a slot)."""
        self._lock = threading.Lock()
        self._stop_reason: str | None = None
        self._tick = time.monotonic()
        self.errors = RepeatingErrors(log)
        self.backoff = RedisBackoff(self.name, self.metrics, lambda: bool(self._stop_reason))
        self.endings = JobEndings(
            self.queue, self.qc, self.name, self.metrics, self.backoff.retry, self._forget
        )
        self.maintenance = Maintenance(self.queue, self.qc, self.name, self.metrics)
        self.checks = JobChecks(
            client,
            self.queue.keys,
            self.name,
            self.metrics,
            self.endings,
            self._jobs,
            self._count_live,
        )
        self.heartbeat = Heartbeat(
            client,
            self.queue.keys,
            self.name,
            self.qc.heartbeat_s,
            entries=lambda: [h.entry for h in self._jobs.values()],
            on_lost=lambda entry: self.checks.lost(entry),
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
            since_outage=self.backoff.since_outage,
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
            self.endings.rewind,
        )
        events = EventSink(self._emit_event, config.events, maps=config.events.maps)
        self.path = FramePath(
            self.pipeline,
            FramePathSettings.from_config(config, keep_open=True),
            [results, events],
            on_stream_error=self._analysis_failed,
        )
        port = self.qc.metrics_port if metrics_port is None else metrics_port
        self.metrics_server = MetricsServer(self.metrics, self.health, port) if port else None

    def _emit_event(self, event: dict[str, Any]) -> None:
        """A verdict event to ``veritas:events`` (retried through Redis outages)."""
        keys, limit = self.queue.keys, self.config.events.max_len

        def add() -> None:
            payload = msgpack.packb(event, use_bin_type=True)
            fields = {"payload": payload, "job": event.get("job", "")}
            self.redis.xadd(keys.events, fields, maxlen=limit, approximate=True)

        self.backoff.retry(add, "writing an event")
        log.info(
            "event %s: %s %s on %s (%.1f-%.1f s)",
            event["event"],
            event["verdict"],
            event["id"],
            event["source"],
            event["start_pts"],
            event["end_pts"],
            extra={"job": event.get("job")},
        )

    # --- the loop -----------------------------------------------------------------------

    def work(self, install_signals: bool = True) -> int:
        """Consume jobs until stopped; returns the exit status (0 for a graceful stop)."""
        if install_signals:
            install_stop_signals(
                self.name, self.qc.claim_idle_s, self.stop, lambda: bool(self._stop_reason)
            )
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
            while True:
                self._tick = time.monotonic()
                reason = self._exit_reason()
                if reason:
                    break
                try:
                    self.intake.take()
                    self._process()
                    self.checks.run()
                    self.maintenance.run()
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
                max_lag_s=self.qc.live_max_lag_s or None,
            )
        )
        held.latency = self.path.latency(held.key)

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
        if held is not None:
            held.dropped = ended.dropped
            self._count_live(held)
            self.endings.source_ended(held, ended.error)

    # --- ending jobs --------------------------------------------------------------------

    def _forget(self, held: RunningJob, stop_source: bool) -> None:
        with self._lock:  # no heartbeat renews it after this
            self._jobs.pop(held.key, None)
        self.metrics.jobs_active.set(len(self._jobs))
        self.metrics.forget_job(held.spec.id)
        if stop_source:
            held.stop.set()
            self._stopping.add(held.key)
            self.path.stop(held.key)

    # --- checks and housekeeping --------------------------------------------------------

    def _count_live(self, held: RunningJob) -> None:
        held.count_live(self.path.dropped(held.key), self.metrics)

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

    def _shutdown(self, reason: str) -> None:
        self.heartbeat.stop()
        handed = self.endings.hand_back_all(list(self._jobs.values()))
        self.path.close()
        if self.metrics_server:
            self.metrics_server.stop()
        self.queue.leave(self.name)
        log.info(
            "worker %s stopped (%s): %d jobs ended here, %d handed back",
            self.name,
            reason,
            self.endings.done,
            handed,
            extra={"worker": self.name, "jobs_done": self.endings.done, "handed_back": handed},
        )
