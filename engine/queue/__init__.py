"""The Redis job queue, its workers and live feeds (``veritas submit|worker|serve|...``).

Public names, re-exported lazily (the CLI imports this package at start; the worker
pulls in torch only when it is used)::

    from engine.queue import Queue, Worker, connect
    queue = Queue(connect("redis://localhost:6379/0"))
    job_id = queue.enqueue("/data/clip.mp4")
    for record in queue.results(job_id, follow=True): ...

Modules, one noun each: ``keys`` (the Redis key layout), ``job`` (JobStatus, JobSpec,
Job), ``schema`` (payload encoding and validation), ``policy`` (what a worker may
open), ``queue`` (Queue: submit, state changes, inspection, trimming), ``results``
(exactly-once frame records), ``heartbeat`` (keeping claims alive), ``worker``
(Worker), ``metrics`` (Prometheus, /healthz), ``server`` (EmbeddedRedis), ``pool``
(WorkerPool for ``veritas serve``), ``connection``, ``logs``, ``errors``, ``cli``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "EmbeddedRedis": "engine.queue.server",
    "GROUP": "engine.queue.keys",
    "InvalidJobError": "engine.queue.errors",
    "Job": "engine.queue.job",
    "JobNotCancellableError": "engine.queue.errors",
    "JobRefusedError": "engine.queue.errors",
    "JobSpec": "engine.queue.job",
    "JobStatus": "engine.queue.job",
    "Keys": "engine.queue.keys",
    "Mode": "engine.queue.job",
    "NoSuchJobError": "engine.queue.errors",
    "Queue": "engine.queue.queue",
    "QueueError": "engine.queue.errors",
    "QueueFullError": "engine.queue.errors",
    "RedisUnavailableError": "engine.queue.errors",
    "SourcePolicy": "engine.queue.policy",
    "Worker": "engine.queue.worker",
    "WorkerPool": "engine.queue.pool",
    "connect": "engine.queue.connection",
    "decode_payload": "engine.queue.schema",
    "encode_payload": "engine.queue.schema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.queue' has no attribute {name!r}")
    return getattr(import_module(module), name)
