"""The stream muxer: frames from many sources, batched together.

Like DeepStream's stream muxer, :class:`StreamMuxer` reads each source in its own
thread and hands the consumer :class:`~engine.frames.FrameBatch` es that mix the
sources: a batch goes out when it holds ``batch_size`` frames, or when its oldest
frame has waited ``max_latency_ms``. Frames of one source stay in order, and frames
of different sources enter batches in the order they were decoded. When a source
ends (or fails), a :class:`SourceEnded` event follows the batch holding its last
frame, so every frame that was decoded is processed before its source's error is
reported.

Memory is bounded: each source has its own buffer of at most ``queue_depth`` frames
(``depth`` per source). What happens when that buffer is full is the source's
:class:`Overflow` policy:

* ``Overflow.BLOCK`` (lossless, files): the reader waits; nothing is dropped.
* ``Overflow.DROP_OLDEST`` (real time, live feeds): the oldest buffered frame of that
  source is dropped, counted (:meth:`StreamMuxer.dropped`, ``SourceEnded.dropped``)
  and the new one kept, so a feed that outruns the models is analysed at the rate
  they sustain, always on its freshest frames, and its reader never stalls the
  network connection.

Sources can be added while the muxer runs and stopped one by one (:meth:`stop`);
:meth:`poll` waits at most a given time for the next item, so a consumer can do other
work (a queue worker polls Redis) between batches. Iterating the muxer yields items
until every source has ended (``keep_open=True``: until :meth:`close`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from engine.frames import Frame, FrameBatch
from engine.realtime import too_late

log = logging.getLogger(__name__)

DEFAULT_QUEUE_DEPTH = 16
"""Frames each source may decode ahead of the consumer."""

READER_JOIN_TIMEOUT_S = 5.0
"""How long :meth:`StreamMuxer.close` waits for each reader thread."""


class Overflow(StrEnum):
    """What a source's reader does when its buffer is full."""

    BLOCK = "block"
    """Wait for the consumer (lossless)."""
    DROP_OLDEST = "drop_oldest"
    """Drop the oldest buffered frame of this source and count it (real time)."""


@dataclass(frozen=True)
class SourceEnded:
    """A source has delivered its last frame; ``error`` says why it stopped early."""

    source: str
    frames: int
    error: BaseException | None = None
    dropped: int = 0
    """Frames the source decoded but the muxer dropped (``Overflow.DROP_OLDEST``)."""
    stopped: bool = False
    """True when the consumer stopped the source (:meth:`StreamMuxer.stop`)."""


MuxItem = FrameBatch | SourceEnded


@dataclass
class _Feed:
    """One source's reader state; guarded by the muxer's condition variable."""

    name: str
    depth: int
    overflow: Overflow
    max_lag_s: float | None = None
    """Drop (and count) a frame that arrived longer ago than this when it is batched."""
    buffer: deque[tuple[int, float, Frame]] = field(default_factory=deque)
    """(arrival number, arrival time, frame), oldest first."""
    frames: int = 0
    dropped: int = 0
    finished: bool = False
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


@dataclass(frozen=True)
class _Taken:
    """A batch's frames, taken from the buffers under the lock, stacked after it."""

    frames: list[Frame]
    streams: list[str]


class StreamMuxer:
    def __init__(
        self,
        batch_size: int,
        max_latency_ms: float,
        queue_depth: int = DEFAULT_QUEUE_DEPTH,
        pin_memory: bool = False,
        keep_open: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if queue_depth < 1:
            raise ValueError(f"queue_depth must be >= 1, got {queue_depth}")
        self.batch_size = batch_size
        self.max_latency_s = max_latency_ms / 1000.0
        self.queue_depth = queue_depth
        self.pin_memory = pin_memory
        self.keep_open = keep_open
        self._cond = threading.Condition()
        self._feeds: dict[str, _Feed] = {}
        self._pending: list[tuple[_Feed, float, Frame]] = []
        """The batch being formed: (source, arrival time, frame)."""
        self._arrivals = itertools.count()
        self._closed = False

    # --- sources ------------------------------------------------------------------------

    def add(
        self,
        name: str,
        frames: Callable[[], Iterable[Frame]],
        overflow: Overflow = Overflow.BLOCK,
        depth: int | None = None,
        max_lag_s: float | None = None,
    ) -> None:
        """Start reading ``frames()`` (called in the reader thread) as source ``name``.

        ``name`` is the stream key: batches give it per frame (``FrameBatch.streams``),
        whatever the frames' own ``source`` says.

        ``depth`` (default ``queue_depth``) bounds the frames buffered for this source;
        ``overflow`` says what a full buffer does; ``max_lag_s`` drops (and counts) the
        frames that arrived (``Frame.arrived``) longer ago than that when they would be
        batched. Names must be unique among the sources that have not ended.
        """
        feed = _Feed(name, depth or self.queue_depth, Overflow(overflow), max_lag_s)
        with self._cond:
            if self._closed:
                raise RuntimeError("the muxer is closed")
            if name in self._feeds:
                raise ValueError(f"source {name!r} is already being read")
            self._feeds[name] = feed
        feed.thread = threading.Thread(
            target=self._read, args=(feed, frames), daemon=True, name=f"mux-{name[:40]}"
        )
        feed.thread.start()

    def stop(self, name: str) -> None:
        """Stop reading source ``name`` and discard its frames not yet batched.

        Its reader closes the source after the frame in hand; a ``SourceEnded`` with
        ``stopped=True`` follows. Unknown or ended sources are ignored.
        """
        with self._cond:
            feed = self._feeds.get(name)
            if feed is None:
                return
            feed.stop.set()
            feed.buffer.clear()
            self._pending = [p for p in self._pending if p[0] is not feed]
            self._cond.notify_all()

    def dropped(self, name: str) -> int:
        """Frames of source ``name`` dropped so far (0 for unknown sources)."""
        with self._cond:
            feed = self._feeds.get(name)
            return feed.dropped if feed else 0

    @property
    def active(self) -> int:
        """Sources whose end has not been delivered to the consumer yet."""
        with self._cond:
            return len(self._feeds)

    # --- reader threads -----------------------------------------------------------------

    def _read(self, feed: _Feed, frames: Callable[[], Iterable[Frame]]) -> None:
        error: BaseException | None = None
        iterator: Iterator[Frame] | None = None
        try:
            iterator = iter(frames())
            for frame in iterator:
                if not self._put(feed, frame):
                    return
        except Exception as e:  # reported to the consumer, in order, after the frames
            error = e
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()  # a generator's own `finally` (closing the file) runs now
                except Exception as e:  # pragma: no cover - a source failing to close
                    log.warning("muxer: closing source %s failed: %r", feed.name, e)
            with self._cond:
                feed.finished = True
                feed.error = error
                self._cond.notify_all()

    def _put(self, feed: _Feed, frame: Frame) -> bool:
        """Buffer ``frame``; False when the source was stopped (the reader returns)."""
        with self._cond:
            while len(feed.buffer) >= feed.depth and feed.overflow is Overflow.BLOCK:
                if feed.stop.is_set() or self._closed:
                    return False
                self._cond.wait(0.1)
            if feed.stop.is_set() or self._closed:
                return False
            if len(feed.buffer) >= feed.depth:  # DROP_OLDEST
                feed.buffer.popleft()
                feed.dropped += 1
            feed.buffer.append((next(self._arrivals), time.monotonic(), frame))
            feed.frames += 1
            self._cond.notify_all()
            return True

    # --- consumer -----------------------------------------------------------------------

    def poll(self, timeout: float | None = None) -> MuxItem | None:
        """The next batch or source end, waiting at most ``timeout`` seconds (None: forever).

        Returns None when nothing is ready in time (or the muxer is closed).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                item = self._ready()
                if item is not None:
                    break
                now = time.monotonic()
                wake = deadline
                if self._pending:
                    due = self._pending[0][1] + self.max_latency_s
                    wake = due if wake is None else min(wake, due)
                if wake is not None and wake <= now:
                    if deadline is not None and deadline <= now:
                        return None
                    continue
                self._cond.wait(None if wake is None else wake - now)
            else:
                return None
        if isinstance(item, _Taken):  # stacked outside the lock: readers go on meanwhile
            return FrameBatch.from_frames(item.frames, self.pin_memory, streams=item.streams)
        return item

    def _ready(self) -> MuxItem | _Taken | None:
        """What can be handed out now (caller holds the lock)."""
        for feed in list(self._feeds.values()):
            if feed.finished and not feed.buffer:
                if any(p[0] is feed for p in self._pending):
                    return self._flush()
                del self._feeds[feed.name]
                return SourceEnded(
                    feed.name, feed.frames, feed.error, feed.dropped, feed.stop.is_set()
                )
        while len(self._pending) < self.batch_size:
            heads = [f for f in self._feeds.values() if f.buffer]
            if not heads:
                break
            feed = min(heads, key=lambda f: f.buffer[0][0])
            _, stamp, frame = feed.buffer.popleft()
            self._cond.notify_all()  # a blocked reader may continue
            if too_late(frame, feed.max_lag_s):
                feed.dropped += 1
                continue
            self._pending.append((feed, stamp, frame))
        if len(self._pending) >= self.batch_size:
            return self._flush()
        if self._pending and time.monotonic() >= self._pending[0][1] + self.max_latency_s:
            return self._flush()
        return None

    def _flush(self) -> _Taken:
        frames = [frame for _, _, frame in self._pending]
        streams = [feed.name for feed, _, _ in self._pending]
        self._pending = []
        return _Taken(frames, streams)

    def __iter__(self) -> Iterator[MuxItem]:
        try:
            while True:
                with self._cond:
                    if self._closed or not (self.keep_open or self._feeds or self._pending):
                        return
                item = self.poll(0.1)
                if item is not None:
                    yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reader threads (they finish the frame in hand) and wait for them."""
        with self._cond:
            self._closed = True
            feeds = list(self._feeds.values())
            for feed in feeds:
                feed.stop.set()
            self._cond.notify_all()
        for feed in feeds:
            if feed.thread is None or feed.thread is threading.current_thread():
                continue
            feed.thread.join(timeout=READER_JOIN_TIMEOUT_S)
            if feed.thread.is_alive():
                log.warning(
                    "muxer: reader thread %s did not stop within %.0f s",
                    feed.thread.name,
                    READER_JOIN_TIMEOUT_S,
                )
