"""Real-time mode: the drop decision before any per-frame work, and a bounded lag.

A live feed in real-time mode is read by :class:`RealTimeGate`: a thread of its own
only decodes (the one cost every frame must pay: a video decoder needs each frame as a
reference) into a buffer of ``depth`` frames, dropping the oldest when full, so the
network connection is drained at the feed's rate whatever the analysis does. The
frame path's reader thread takes frames from the gate for the per-frame work (face
detection ahead, batching); a frame that arrived more than ``max_lag_s`` ago when
taken is dropped too, and the muxer applies the same budget when it batches (a frame
that waited behind a slow analysis). All are counted (:attr:`RealTimeGate.dropped`,
the muxer's drop count). The frames analysed are then
always among the freshest, and a frame's wait from its arrival to its analysis is at
most the lag budget; to its record, the budget plus one batch's analysis.

Without a gate (lossless mode, files) the reader blocks instead and nothing is lost.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import replace

from engine.frames import Frame

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0
"""How long closing the gate waits for its decode thread."""


def too_late(frame: Frame, max_lag_s: float | None) -> bool:
    """Whether ``frame`` arrived more than ``max_lag_s`` ago (never without a budget)."""
    if max_lag_s is None or frame.arrived is None:
        return False
    return time.time() - frame.arrived > max_lag_s


class RealTimeGate:
    """Frames of ``frames`` (iterated in a thread of the gate's) through a drop-oldest
    buffer of ``depth``; iterate the gate once, in one thread (see the module doc).

    ``max_lag_s`` (None: no budget) drops frames that waited longer in the buffer,
    counted apart (:attr:`late`). The source's error, if any, is raised by the
    iteration after the frames buffered before it.
    """

    def __init__(self, frames: Iterable[Frame], depth: int, max_lag_s: float | None) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if max_lag_s is not None and max_lag_s <= 0:
            raise ValueError(f"max_lag_s must be > 0, got {max_lag_s}")
        self._frames = frames
        self.depth = depth
        self.max_lag_s = max_lag_s
        self.overflowed = 0
        """Frames dropped because the buffer was full."""
        self.late = 0
        """Frames dropped because they were older than ``max_lag_s`` when taken."""
        self._buffer: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._done = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        """Every frame the gate dropped (full buffer or over the lag budget)."""
        return self.overflowed + self.late

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is not None:
            raise RuntimeError("a RealTimeGate is iterated once")
        self._thread = threading.Thread(target=self._read, name="veritas-gate", daemon=True)
        self._thread.start()
        try:
            while True:
                frame = self._take()
                if frame is None:
                    break
                yield frame
            if self._error is not None:
                raise self._error
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decode thread (it closes the source) and wait for it."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("real-time gate: the decode thread did not stop in time")

    def _read(self) -> None:
        iterator = iter(self._frames)
        try:
            for frame in iterator:
                if self._stop.is_set():
                    break
                with self._cond:
                    if len(self._buffer) >= self.depth:
                        self._buffer.popleft()
                        self.overflowed += 1
                    if frame.arrived is None:  # its age counts from here
                        frame = replace(frame, arrived=time.time())
                    self._buffer.append(frame)
                    self._cond.notify_all()
        except Exception as error:  # raised to the consumer after the buffered frames
            self._error = error
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()  # the source's own finally runs in the thread that read it
                except Exception as error:  # pragma: no cover - a source failing to close
                    log.warning("real-time gate: closing the source failed: %r", error)
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _take(self) -> Frame | None:
        """The oldest frame within the lag budget; None at the end or when stopped."""
        with self._cond:
            while True:
                if self._stop.is_set():
                    return None
                while self._buffer:
                    frame = self._buffer.popleft()
                    if too_late(frame, self.max_lag_s):
                        self.late += 1
                        continue
                    return frame
                if self._done:
                    return None
                self._cond.wait(0.1)


class LatencyWindow:
    """Latency from a frame's arrival to its record, over the last ``size`` records."""

    def __init__(self, size: int = 1000) -> None:
        self._seconds: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._seconds.append(max(0.0, seconds))
        self.count += 1

    @property
    def last_s(self) -> float | None:
        """The latest record's latency: how far behind its feed the analysis is now."""
        return self._seconds[-1] if self._seconds else None

    def summary(self) -> dict[str, float] | None:
        """``{"p50_ms", "p99_ms", "max_ms"}`` over the window; None before any record."""
        if not self._seconds:
            return None
        ordered = sorted(self._seconds)
        return {
            "p50_ms": round(1000 * _quantile(ordered, 0.50), 1),
            "p99_ms": round(1000 * _quantile(ordered, 0.99), 1),
            "max_ms": round(1000 * ordered[-1], 1),
        }


def _quantile(ordered: list[float], q: float) -> float:
    """The nearest-rank quantile of sorted values."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
