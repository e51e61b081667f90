"""Jobs: what to analyse (:class:`JobSpec`), and where a job stands (:class:`Job`).

A job analyses one source (a file path or a live feed URL). Its results stream holds
one record per frame, with the frame index as the entry ID, so the frames of a job
are totally ordered and a frame is recorded at most once (``engine.queue.results``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"
    """Waiting for a worker (new, or handed back by one that stopped)."""
    RUNNING = "running"
    DONE = "done"
    """Every frame was analysed (a live feed: it reached its ``max_duration_s``)."""
    FAILED = "failed"
    """Failed for good; the reason is in ``error`` and the job is in the dead stream."""
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class Mode(StrEnum):
    """How a source is read when the models fall behind."""

    LOSSLESS = "lossless"
    """Every frame is analysed; decoding waits for the models (files)."""
    REALTIME = "realtime"
    """The oldest buffered frames are dropped and counted (live feeds)."""


def new_job_id() -> str:
    """A fresh job id: 24 hex digits from a random UUID."""
    return uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class JobSpec:
    """A job as submitted: the decoded, validated payload (``engine.queue.schema``)."""

    id: str
    source: str
    """A path (absolute on the workers' machines) or a URL."""
    mode: Mode | None = None
    """None: ``queue.live_mode`` for URLs, lossless for files."""
    fps: float | None = None
    """Sample frames at this rate (overrides the worker's ``sources.fps``)."""
    every: int | None = None
    """Keep every Nth frame (overrides the worker's ``sources.every``)."""
    max_duration_s: float | None = None
    """Stop after this much stream time (a live feed then ends ``done``)."""
    submitted: float | None = None
    """Unix time of submission."""


@dataclass(frozen=True)
class Job:
    """A job's state, as its hash holds it."""

    id: str
    status: JobStatus
    source: str = ""
    """The source with credentials masked."""
    attempts: int = 0
    error: str = ""
    progress: Mapping[str, Any] = field(default_factory=dict)
    worker: str = ""
    entry: str = ""
    """ID of the job's entry in the jobs stream."""
    mode: str = ""
    submitted: float | None = None
    started: float | None = None
    finished: float | None = None
    updated: float | None = None

    @classmethod
    def from_hash(cls, job_id: str, fields: Mapping[bytes | str, bytes | str]) -> Job:
        d = {_text(k): _text(v) for k, v in fields.items()}
        try:
            progress = json.loads(d.get("progress") or "{}")
        except ValueError:
            progress = {"unreadable": d.get("progress", "")}
        try:
            status = JobStatus(d.get("status", ""))
        except ValueError:
            status = JobStatus.QUEUED
        return cls(
            id=job_id,
            status=status,
            source=d.get("source", ""),
            attempts=int(d.get("attempts") or 0),
            error=d.get("error", ""),
            progress=progress if isinstance(progress, dict) else {},
            worker=d.get("worker", ""),
            entry=d.get("entry", ""),
            mode=d.get("mode", ""),
            submitted=_number(d.get("submitted")),
            started=_number(d.get("started")),
            finished=_number(d.get("finished")),
            updated=_number(d.get("updated")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "source": self.source,
            "attempts": self.attempts,
            "error": self.error,
            "progress": dict(self.progress),
            "worker": self.worker,
            "entry": self.entry,
            "mode": self.mode,
            "submitted": self.submitted,
            "started": self.started,
            "finished": self.finished,
            "updated": self.updated,
        }


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
