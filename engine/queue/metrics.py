"""A worker's Prometheus metrics and its ``/metrics`` + ``/healthz`` HTTP endpoint.

Metrics (one registry per worker, all prefixed ``veritas_``):

================================  =========  ============================================
name                              type       meaning
================================  =========  ============================================
``frames_total``                  counter    frames analysed
``stage_seconds_total{stage}``    counter    time spent in each pipeline stage
``stage_frames_per_second{stage}``gauge      throughput of each stage on the last batch
``batch_frames``                  histogram  frames per batch
``batch_jobs``                    histogram  jobs sharing a batch
``jobs_active``                   gauge      jobs this worker holds
``jobs_finished_total{status}``   counter    jobs ended here: done, failed, cancelled
``jobs_reclaimed_total``          counter    jobs taken over from a silent worker
``jobs_released_total{reason}``   counter    jobs given back: shutdown, retry, lost, rewind
``jobs_dead_total``               counter    jobs moved to the dead stream
``queue_lag``                     gauge      jobs in the stream not yet delivered
``queue_pending``                 gauge      jobs delivered and not acknowledged
``queue_wait_seconds``            histogram  time from submission to a worker starting it
``live_frames_dropped_total``     counter    live frames dropped in real-time mode
``live_reconnects_total``         counter    live feed reconnections
``live_frames_lost_total{cause}`` counter    live frames not analysed: realtime (dropped
                                             to keep up), feed_gap (the feed's timeline
                                             skipped them: HLS segments missed), stall
                                             (the publisher went away), reconnect
``feed_latency_seconds{job,q}``   gauge      arrival-to-record latency per live job over
                                             its last 1,000 records (q: 0.5, 0.99, max)
``duplicate_frames_total``        counter    records Redis refused as already recorded
``redis_errors_total``            counter    failed Redis round trips (retried)
================================  =========  ============================================

``/healthz`` answers 200 with a JSON body while the worker loop turns and Redis
answers, 503 otherwise (a stall, or Redis down for longer than a loop).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

LATENCY_QUANTILES = {"0.5": "p50_ms", "0.99": "p99_ms", "max": "max_ms"}


class WorkerMetrics:
    """The metrics of one worker, in their own registry."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.registry = r = CollectorRegistry()
        labels = {"worker": worker}
        self.frames = Counter("veritas_frames", "Frames analysed", registry=r)
        self.stage_seconds = Counter(
            "veritas_stage_seconds", "Time spent in each stage", ["stage"], registry=r
        )
        self.stage_fps = Gauge(
            "veritas_stage_frames_per_second",
            "Frames per second each stage sustained on the last batch",
            ["stage"],
            registry=r,
        )
        self.batch_frames = Histogram(
            "veritas_batch_frames",
            "Frames per batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.batch_jobs = Histogram(
            "veritas_batch_jobs",
            "Jobs sharing a batch",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.jobs_active = Gauge("veritas_jobs_active", "Jobs this worker holds", registry=r)
        self.jobs_finished = Counter(
            "veritas_jobs_finished", "Jobs ended on this worker", ["status"], registry=r
        )
        self.jobs_reclaimed = Counter(
            "veritas_jobs_reclaimed", "Jobs taken over from a silent worker", registry=r
        )
        self.jobs_released = Counter(
            "veritas_jobs_released", "Jobs given back to the queue", ["reason"], registry=r
        )
        self.jobs_dead = Counter("veritas_jobs_dead", "Jobs dead-lettered", registry=r)
        self.queue_lag = Gauge("veritas_queue_lag", "Jobs not yet delivered", registry=r)
        self.queue_pending = Gauge(
            "veritas_queue_pending", "Jobs delivered, not acknowledged", registry=r
        )
        self.queue_wait = Histogram(
            "veritas_queue_wait_seconds",
            "Time from submission to a worker starting the job",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
            registry=r,
        )
        self.dropped = Counter(
            "veritas_live_frames_dropped", "Live frames dropped in real-time mode", registry=r
        )
        self.reconnects = Counter("veritas_live_reconnects", "Live feed reconnections", registry=r)
        self.lost = Counter(
            "veritas_live_frames_lost",
            "Live frames not analysed, by cause",
            ["cause"],
            registry=r,
        )
        self.latency = Gauge(
            "veritas_feed_latency_seconds",
            "Arrival-to-record latency of a live job's recent records",
            ["job", "quantile"],
            registry=r,
        )
        self.duplicates = Counter(
            "veritas_duplicate_frames", "Frame records refused as already recorded", registry=r
        )
        self.redis_errors = Counter(
            "veritas_redis_errors", "Failed Redis round trips (retried)", registry=r
        )
        self.info = Gauge("veritas_worker_info", "Worker identity", ["worker"], registry=r)
        self.info.labels(**labels).set(1)

    def record_batch(self, frames: int, jobs: int, stage_ms: dict[str, float]) -> None:
        self.frames.inc(frames)
        self.batch_frames.observe(frames)
        self.batch_jobs.observe(jobs)
        for stage, ms in stage_ms.items():
            self.stage_seconds.labels(stage).inc(ms / 1000)
            if ms > 0:
                self.stage_fps.labels(stage).set(frames / (ms / 1000))

    def set_latency(self, job: str, summary: dict[str, float]) -> None:
        """A live job's latency (``LatencyWindow.summary``) as gauges."""
        for q, key in LATENCY_QUANTILES.items():
            self.latency.labels(job, q).set(summary[key] / 1000)

    def forget_job(self, job: str) -> None:
        """Remove a job's per-job series when it leaves this worker."""
        for q in LATENCY_QUANTILES:
            try:
                self.latency.remove(job, q)
            except KeyError:
                pass

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` on ``host:port`` in a daemon thread."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        port: int,
        host: str = "0.0.0.0",
    ) -> None:
        self.metrics = metrics
        metrics_, health_ = metrics, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, metrics_.exposition())
                elif self.path.split("?")[0] == "/healthz":
                    ok, body = health_()
                    self._send(200 if ok else 503, "application/json", json.dumps(body).encode())
                else:
                    self._send(404, "text/plain", b"not found: try /metrics or /healthz\n")

            def _send(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        log.info(
            "worker %s: metrics on :%d/metrics, health on /healthz", self.metrics.worker, self.port
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
