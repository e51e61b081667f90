"""Synthetic streams: one real face per frame, as files or in memory, paced or not.

Frames come from ``engine.sample.sample_frames`` (scikit-image's ``astronaut()`` photo,
a real frontal face, zoomed and panned a little from frame to frame), placed on a
canvas of the requested size with a reflected border. Stream ``k`` starts ``k`` frames
later in the same motion, so streams differ. ``write_clips`` encodes them with
``engine.video.VideoWriter`` (H.264 in ``.mp4``, VP9 in ``.webm``).

:class:`PacedStream` plays frames at a fixed rate like a live feed with a one-frame
buffer: frame ``i`` is due at ``start + i / fps``; if the consumer has not taken frame
``i`` by the time frame ``i + 1`` is due, the feed has overwritten it and it counts as
*dropped* (and is skipped).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.frames import Frame
from engine.sample import sample_frames
from engine.sources import SourceSettings, open_source


def stream_frames(n: int, height: int, width: int, stream: int = 0) -> list[np.ndarray]:
    """``n`` uint8 RGB frames (``height`` x ``width``) of stream ``stream``: one face each."""
    side = min(height, width)
    cycle = max(n, 8)
    square = sample_frames(cycle + stream, size=side)[stream:]
    frames = []
    for i in range(n):
        image = square[i % len(square)]
        top, left = (height - side) // 2, (width - side) // 2
        if (height, width) != (side, side):
            image = cv2.copyMakeBorder(
                image,
                top,
                height - side - top,
                left,
                width - side - left,
                cv2.BORDER_REFLECT_101,
            )
        frames.append(np.ascontiguousarray(image))
    return frames


def write_clips(
    folder: Path,
    streams: int,
    frames: int,
    height: int,
    width: int,
    fps: float = 25.0,
    distinct: int = 4,
    suffix: str = ".mp4",
) -> list[Path]:
    """One encoded clip per stream (at most ``distinct`` different files, reused in turn)."""
    from engine.video import VideoWriter  # PyAV encodes them

    folder.mkdir(parents=True, exist_ok=True)
    clips: list[Path] = []
    for k in range(min(streams, distinct)):
        path = folder / f"stream{k}-{frames}x{height}x{width}{suffix}"
        if not path.exists():
            with VideoWriter(path, fps) as writer:
                for image in stream_frames(frames, height, width, stream=k):
                    writer.write(image)
        clips.append(path)
    return [clips[k % len(clips)] for k in range(streams)]


def memory_stream(name: str, images: list[np.ndarray], fps: float = 25.0) -> Iterator[Frame]:
    for i, image in enumerate(images):
        yield Frame(source=name, index=i, pts=i / fps, image=image)


def file_stream(name: str, path: Path, settings: SourceSettings) -> Iterator[Frame]:
    """Decoded frames of ``path``, named ``name`` (so several streams can share a file)."""
    with open_source(str(path), settings) as source:
        for frame in source:
            yield Frame(source=name, index=frame.index, pts=frame.pts, image=frame.image)


@dataclass
class Arrivals:
    """When each paced frame was due, and how many were dropped; shared by threads."""

    due: dict[tuple[str, int], float] = field(default_factory=dict)
    dropped: int = 0
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class PacedStream:
    """Frames of ``frames()`` (restarted when it ends) sent at ``fps``, ``count`` in all.

    ``start`` is the ``time.monotonic()`` at which frame 0 is due. Frame indices count
    sent-or-dropped frames (0, 1, ...), whatever the underlying stream's indices.
    """

    def __init__(
        self,
        name: str,
        frames: Callable[[], Iterator[Frame]],
        fps: float,
        count: int,
        start: float,
        arrivals: Arrivals,
        stop: threading.Event | None = None,
    ) -> None:
        self.name, self.frames, self.fps, self.count = name, frames, fps, count
        self.start, self.arrivals = start, arrivals
        self.stop = stop or threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        period = 1.0 / self.fps
        source = iter(self.frames())
        for i in range(self.count):
            if self.stop.is_set():
                return
            try:
                frame = next(source)
            except StopIteration:
                source = iter(self.frames())
                frame = next(source)
            due = self.start + i * period
            now = time.monotonic()
            if now > due + period:  # frame i + 1 is already due: frame i was overwritten
                with self.arrivals.lock:
                    self.arrivals.dropped += 1
                continue
            if due > now:
                time.sleep(due - now)
            with self.arrivals.lock:
                self.arrivals.due[(self.name, i)] = due
                self.arrivals.sent += 1
            yield Frame(source=self.name, index=i, pts=i * period, image=frame.image)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, nearest rank (NaN when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
