"""The stream muxer: frames from many sources, batched together.

Like DeepStream's stream muxer, :class:`StreamMuxer` reads each source in its own
thread and hands the consumer :class:`~engine.frames.FrameBatch` es that mix the
sources: a batch goes out when it holds ``batch_size`` frames, or when its oldest
frame has waited ``max_latency_ms``. Frames of one source stay in order. When a
source ends (or fails), a :class:`SourceEnded` event follows the batch holding its
last frame, so every frame that was decoded is processed before its source's error
is reported.

Memory is bounded: each source thread may run at most ``queue_depth`` frames ahead
of the consumer (a full queue blocks the reader; nothing is dropped).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from engine.frames import Frame, FrameBatch

log = logging.getLogger(__name__)

DEFAULT_QUEUE_DEPTH = 16
"""Frames each source may decode ahead of the consumer."""


@dataclass(frozen=True)
class SourceEnded:
    """A source has delivered its last frame; ``error`` says why it stopped early."""

    source: str
    frames: int
    error: BaseException | None = None


MuxItem = FrameBatch | SourceEnded


class StreamMuxer:
    def __init__(
        self,
        batch_size: int,
        max_latency_ms: float,
        queue_depth: int = DEFAULT_QUEUE_DEPTH,
        pin_memory: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_latency_s = max_latency_ms / 1000.0
        self.pin_memory = pin_memory
        self._queue: queue.Queue[tuple[float, Frame] | SourceEnded] = queue.Queue(
            maxsize=queue_depth
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active = 0
        self._lock = threading.Lock()

    def add(self, name: str, frames: Callable[[], Iterable[Frame]]) -> None:
        """Start reading ``frames()`` (called in the reader thread) as source ``name``."""
        with self._lock:
            self._active += 1
        t = threading.Thread(
            target=self._read, args=(name, frames), daemon=True, name=f"mux-{name[:40]}"
        )
        self._threads.append(t)
        t.start()

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def _put(self, item: tuple[float, Frame] | SourceEnded) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, name: str, frames: Callable[[], Iterable[Frame]]) -> None:
        count = 0
        error: BaseException | None = None
        iterator: Iterator[Frame] | None = None
        try:
            iterator = iter(frames())
            for frame in iterator:
                if not self._put((time.monotonic(), frame)):
                    return
                count += 1
        except Exception as e:  # reported to the consumer, in order, after the frames
            error = e
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a generator's own `finally` (closing the file) runs now
            self._put(SourceEnded(name, count, error))

    def __iter__(self) -> Iterator[MuxItem]:
        pending: list[Frame] = []
        oldest = 0.0
        try:
            while self.active or pending:
                timeout = None
                if pending:
                    timeout = max(0.0, oldest + self.max_latency_s - time.monotonic())
                try:
                    item = self._queue.get(timeout=timeout if pending else 0.1)
                except queue.Empty:
                    if pending:  # the oldest frame waited long enough
                        yield FrameBatch.from_frames(pending, self.pin_memory)
                        pending = []
                    continue
                if isinstance(item, SourceEnded):
                    if pending:
                        yield FrameBatch.from_frames(pending, self.pin_memory)
                        pending = []
                    with self._lock:
                        self._active -= 1
                    yield item
                    continue
                stamp, frame = item
                if not pending:
                    oldest = stamp
                pending.append(frame)
                if len(pending) >= self.batch_size:
                    yield FrameBatch.from_frames(pending, self.pin_memory)
                    pending = []
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reader threads (they finish the frame in hand) and wait for them."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5.0)
            if t.is_alive():
                log.warning("muxer: reader thread %s did not stop within 5 s", t.name)
