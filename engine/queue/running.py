"""A job in a worker's hands: what it is, where it resumes, and its progress so far."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from engine.queue.job import JobSpec, Mode
from engine.redaction import redact_url
from engine.sources import Source


@dataclass
class RunningJob:
    """A job in hand."""

    key: str
    """Its stream's key in the frame path (opaque, unique per attempt)."""
    entry: str
    spec: JobSpec
    payload: bytes
    mode: Mode
    live: bool
    attempts: int
    resume_from: int
    epoch: float | None
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    stored: int = -1
    """The last frame of the job's results stream as this worker last saw it (checked by
    every write: a stream behind it means Redis lost writes)."""
    failures_before: int = 0
    """Failures of the job reported by earlier attempts (``queue.max_attempts`` bounds them)."""
    frames_before: int = 0
    """Frames recorded by earlier attempts (from the job's progress)."""
    dropped_before: int = 0
    written: int = 0
    duplicates: int = 0
    dropped: int = 0
    last_frame: int | None = None
    last_pts: float | None = None
    source: Source | None = None
    """Set by the reader thread once the source is open."""
    total: int | None = None
    """The source's estimated frame count (files), set with ``source``."""
    reconnects_counted: int = 0

    @property
    def display(self) -> str:
        return redact_url(self.spec.source)

    def count_live(self, dropped_now: int, metrics: Any) -> None:
        """Add what the feed lost and reconnected since the last count to ``metrics``
        (``dropped_now``: the frame path's drop count for this job's stream)."""
        dropped = max(self.dropped, dropped_now)
        if dropped > self.dropped:
            metrics.dropped.inc(dropped - self.dropped)
            self.dropped = dropped
        reconnects = getattr(self.source, "reconnects", 0) or 0
        if reconnects > self.reconnects_counted:
            metrics.reconnects.inc(reconnects - self.reconnects_counted)
            self.reconnects_counted = reconnects

    def progress(self) -> dict[str, Any]:
        reconnects = getattr(self.source, "reconnects", None)
        return {
            "frames": self.frames_before + self.written,
            "last_frame": self.last_frame,
            "pts": None if self.last_pts is None else round(self.last_pts, 3),
            "total": self.total,
            "dropped": self.dropped_before + self.dropped,
            "duplicates": self.duplicates,
            "reconnects": reconnects,
            "resumed_from": self.resume_from,
            "attempt": self.attempts,
            "mode": self.mode.value,
        }
