"""A job in a worker's hands: what it is, where it resumes, and its progress so far."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from engine.queue.job import JobSpec, Mode
from engine.realtime import LatencyWindow
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
    lost_before: dict[str, int] = field(default_factory=dict)
    """Frames lost by cause in earlier attempts (from the job's progress)."""
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
    lost_counted: dict[str, int] = field(default_factory=dict)
    """The source's lost frames by cause as last added to the metrics."""
    latency: LatencyWindow | None = None
    """Arrival-to-record latency of its recent records (set by the frame path)."""

    @property
    def display(self) -> str:
        return redact_url(self.spec.source)

    def count_live(self, dropped_now: int, metrics: Any) -> None:
        """Add what the feed lost and reconnected since the last count to ``metrics``
        (``dropped_now``: the frame path's real-time drop count for this job's stream)."""
        dropped = max(self.dropped, dropped_now)
        if dropped > self.dropped:
            metrics.dropped.inc(dropped - self.dropped)
            metrics.lost.labels("realtime").inc(dropped - self.dropped)
            self.dropped = dropped
        reconnects = getattr(self.source, "reconnects", 0) or 0
        if reconnects > self.reconnects_counted:
            metrics.reconnects.inc(reconnects - self.reconnects_counted)
            self.reconnects_counted = reconnects
        for cause, n in self._source_lost().items():
            if n > self.lost_counted.get(cause, 0):
                metrics.lost.labels(cause).inc(n - self.lost_counted.get(cause, 0))
                self.lost_counted[cause] = n
        summary = self.latency.summary() if self.latency else None
        if summary is not None:
            metrics.set_latency(self.spec.id, summary)

    def _source_lost(self) -> dict[str, int]:
        lost = getattr(self.source, "lost", None)
        return dict(lost) if isinstance(lost, dict) else {}

    def lost(self) -> dict[str, int]:
        """Frames of the feed not analysed, by cause, over every attempt: ``realtime``
        (dropped to stay in real time) and the feed's own (see ``FeedClock``)."""
        now = {"realtime": self.dropped, **self._source_lost()}
        causes = dict.fromkeys([*now, *self.lost_before], 0)
        return {c: int(self.lost_before.get(c, 0)) + int(now.get(c, 0)) for c in causes}

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
            **self._live_progress(),
            "resumed_from": self.resume_from,
            "attempt": self.attempts,
            "mode": self.mode.value,
        }

    def _live_progress(self) -> dict[str, Any]:
        if not self.live:
            return {}
        window = self.latency
        last = window.last_s if window else None
        return {
            "lost": self.lost(),
            "discontinuities": getattr(self.source, "discontinuities", None),
            "latency_ms": window.summary() if window else None,
            "lag_s": None if last is None else round(last, 3),
        }
