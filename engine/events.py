"""Verdict events: "stream X: fake face on screen from 12:03:10 to 12:03:41, peak 0.97".

An operator does not read a record per frame. :class:`EventTracker` turns each stream's
records into events for the verdicts that matter (``fake``, ``attacked``): an event
*starts* when, over the last ``window_s`` seconds of the stream (by ``pts``), at least
``min_frames`` frames and at least ``ratio`` of the frames have that verdict; it sends
an *update* every ``update_s`` while it lasts, and *ends* when no frame had the verdict
for ``window_s`` (or the stream ends). Each event says its stream, job, verdict, time
span (``pts`` and the wall-clock arrival of the frames), the verdict counts of the
frames in the span, and its worst face (the highest probability of the verdict: frame,
box, probability, and a JPEG thumbnail of the face beside its XAI map, base64).

:class:`EventSink` is the frame-path sink that feeds the tracker and hands each event to
``emit`` (``veritas run --events``: a JSONL line with ``"type": "event"``; the worker:
the ``veritas:events`` stream) and, with ``events.webhook_url``, to a webhook
(:mod:`engine.webhook`).
"""

from __future__ import annotations

import base64
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from engine.config import EventsConfig as EventSettings
from engine.records import FrameRecord, Verdict
from engine.sinks import Sink, heat_map
from engine.webhook import WebhookSender

if TYPE_CHECKING:
    from engine.batching import SourceEnded
    from engine.frames import FrameBatch
    from engine.pipeline import BatchResult

EVENT_SCHEMA = 1
TRACKED = (Verdict.FAKE, Verdict.ATTACKED)
THUMB = 96
"""Thumbnail side in pixels (face and map, each)."""


@dataclass
class _Episode:
    """An event in progress."""

    id: str
    verdict: Verdict
    start_pts: float
    start_time: float | None
    end_pts: float
    end_time: float | None
    last_update: float
    counts: Counter[str] = field(default_factory=Counter)
    peak: dict[str, Any] | None = None
    peak_p: float = -1.0


@dataclass
class _StreamState:
    job: str
    source: str
    window: deque[tuple[float, Verdict, float | None]] = field(default_factory=deque)
    """(pts, frame verdict, arrival) of the frames within ``window_s`` of the last."""
    episodes: dict[Verdict, _Episode] = field(default_factory=dict)


Thumbnailer = Callable[[FrameRecord, int], str | None]
"""(record, face index) -> the thumbnail of that face (base64 JPEG), or None."""


class EventTracker:
    """Events from records, stream by stream (see the module doc)."""

    def __init__(self, settings: EventSettings | None = None) -> None:
        self.settings = settings or EventSettings()
        self._streams: dict[str, _StreamState] = {}

    def add(
        self, stream: str, record: FrameRecord, thumbnail: Thumbnailer | None = None
    ) -> list[dict[str, Any]]:
        """The events ``record`` (the next frame of ``stream``) starts, updates or ends."""
        s = self.settings
        state = self._streams.setdefault(stream, _StreamState(record.job, record.source))
        t, verdict = record.pts, record.verdict
        state.window.append((t, verdict, record.arrived))
        while state.window and state.window[0][0] < t - s.window_s:
            state.window.popleft()
        events: list[dict[str, Any]] = []
        for tracked in TRACKED:
            episode = state.episodes.get(tracked)
            if episode is not None:
                if verdict is tracked:
                    episode.end_pts, episode.end_time = t, record.arrived
                elif t - episode.end_pts > s.window_s:
                    events.append(self._event("end", state, episode))
                    del state.episodes[tracked]
                    continue
                episode.counts[verdict.value] += 1
                self._peak(episode, record, thumbnail)
                if t - episode.last_update >= s.update_s:
                    episode.last_update = t
                    events.append(self._event("update", state, episode))
            elif verdict is tracked and self._persists(state, tracked):
                episode = self._begin(state, tracked)
                self._peak(episode, record, thumbnail)
                events.append(self._event("start", state, episode))
        return events

    def end(self, stream: str) -> list[dict[str, Any]]:
        """The stream ended: its events in progress end."""
        state = self._streams.pop(stream, None)
        if state is None:
            return []
        return [self._event("end", state, e) for e in state.episodes.values()]

    def _persists(self, state: _StreamState, verdict: Verdict) -> bool:
        n = sum(1 for _, v, _ in state.window if v is verdict)
        s = self.settings
        return n >= s.min_frames and n >= s.ratio * len(state.window)

    def _begin(self, state: _StreamState, verdict: Verdict) -> _Episode:
        first = next(i for i, (_, v, _) in enumerate(state.window) if v is verdict)
        in_span = list(state.window)[first:]
        start_pts, _, start_time = in_span[0]
        end_pts, _, end_time = in_span[-1]
        episode = _Episode(
            uuid.uuid4().hex[:16], verdict, start_pts, start_time, end_pts, end_time, end_pts
        )
        episode.counts.update(v.value for _, v, _ in in_span)
        state.episodes[verdict] = episode
        return episode

    @staticmethod
    def _peak(episode: _Episode, record: FrameRecord, thumbnail: Thumbnailer | None) -> None:
        for j, face in enumerate(record.faces):
            if face.verdict is not episode.verdict:
                continue
            p = face.p_fake if episode.verdict is Verdict.FAKE else (face.p_attacked or 0.0)
            if p > episode.peak_p:
                episode.peak_p = p
                episode.peak = {
                    "frame": record.frame,
                    "pts": round(record.pts, 3),
                    "box": [round(float(v), 1) for v in face.box],
                    "p": round(float(p), 6),
                    "thumbnail": thumbnail(record, j) if thumbnail else None,
                }

    @staticmethod
    def _event(kind: str, state: _StreamState, e: _Episode) -> dict[str, Any]:
        return {
            "schema": EVENT_SCHEMA,
            "type": "event",
            "event": kind,
            "id": e.id,
            "job": state.job,
            "source": state.source,
            "verdict": e.verdict.value,
            "start_pts": round(e.start_pts, 3),
            "end_pts": round(e.end_pts, 3),
            "start_time": None if e.start_time is None else round(e.start_time, 3),
            "end_time": None if e.end_time is None else round(e.end_time, 3),
            "counts": dict(e.counts),
            "peak": e.peak,
        }


def face_thumbnail(batch: FrameBatch, result: BatchResult, k: int, j: int) -> str:
    """Face ``j`` of frame ``k``: its crop, beside its XAI map where it has one, as a
    base64 JPEG (``THUMB`` pixels high)."""
    faces = result.faces
    rows = (faces.frame_ids == k).nonzero().flatten().tolist()
    i = rows[j]
    x1, y1, x2, y2 = faces.crop_boxes[i].tolist()
    frame = batch.frame(k)
    crop = frame[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else frame
    parts = [cv2.resize(np.ascontiguousarray(crop), (THUMB, THUMB))]
    checked = not bool(faces.p_attacked[i].isnan())
    if checked and faces.maps is not None:
        heat = cv2.resize(heat_map(faces.maps[i], faces.signed_maps), (THUMB, THUMB))
        parts.append(cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB))
    image = cv2.cvtColor(np.hstack(parts), cv2.COLOR_RGB2BGR)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return base64.b64encode(jpeg.tobytes()).decode("ascii")


class EventSink(Sink):
    """Feeds each stream's records to an :class:`EventTracker`; ``emit(event)`` gets
    every event (thumbnails are drawn from the batch at the moment a face is the worst)."""

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None],
        settings: EventSettings | None = None,
        maps: bool = True,
    ) -> None:
        self.emit = emit
        self.tracker = EventTracker(settings)
        self.webhook = (
            WebhookSender(
                settings.webhook_url,
                settings.webhook_queue,
                settings.webhook_retries,
                settings.webhook_timeout_s,
            )
            if settings is not None and settings.webhook_url
            else None
        )
        """Also POSTs every event when ``events.webhook_url`` is set."""
        self.keeps_maps = maps
        """Whether thumbnails show the XAI map beside the face (the pipeline keeps the
        maps of every batch for it)."""

    def write(self, result: BatchResult, batch: FrameBatch) -> None:
        for k, record in enumerate(result.records):
            stream = batch.streams[k] if batch.streams else record.source

            def thumb(rec: FrameRecord, j: int, k: int = k) -> str | None:
                return face_thumbnail(batch, result, k, j)

            for event in self.tracker.add(stream, record, thumb):
                self._out(event)

    def stream_ended(self, ended: SourceEnded) -> None:
        for event in self.tracker.end(ended.source):
            self._out(event)

    def _out(self, event: dict[str, Any]) -> None:
        self.emit(event)
        if self.webhook is not None:
            self.webhook.send(event)

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()
