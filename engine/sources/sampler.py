"""Frame sampling: which decoded frames a source hands on.

Two modes, chosen by :class:`~engine.sources.settings.SourceSettings`:

* **by rate** (``fps``): sampling times lie on a grid ``t0, t0 + 1/fps, t0 + 2/fps, ...``
  anchored at the first frame. A frame is kept when its pts reaches the next sampling
  time not yet served (within :data:`JITTER_TOLERANCE` of a period, so timestamps
  rounded to a coarse clock do not lose frames); the grid then advances past that
  frame. The grid never drifts, so the kept rate is ``fps`` on average whatever the
  source's frame rate, constant or variable; a gap in the stream skips the sampling
  times it covers, and a jump backwards in time (a timestamp reset) re-anchors the grid.
  When the source is slower than ``fps``, every frame is kept.
* **by count** (``every``): frames whose decoded index is a multiple of ``every``.
"""

from __future__ import annotations

import math

from engine.sources.settings import MAX_FPS, MIN_FPS, SourceSettings, is_sampling_rate

JITTER_TOLERANCE = 0.1
"""A frame up to this fraction of a sampling period early still serves that sampling
time: pts rounded to milliseconds (Matroska) or jittered by a capture clock is kept."""


class FrameSampler:
    """Decides, frame by frame, whether to keep a decoded frame. One instance per stream."""

    def __init__(self, fps: float | None = None, every: int = 1) -> None:
        if fps is not None and not is_sampling_rate(fps):
            raise ValueError(f"fps must be from {MIN_FPS} to {MAX_FPS} or None, got {fps!r}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every!r}")
        if fps is not None and every != 1:
            raise ValueError("sample by fps or by every, not both")
        self.fps, self.every = fps, every
        self.period = 1.0 / fps if fps is not None else None
        self._anchor = 0.0  # pts of sampling time 0
        self._k: int | None = None  # number of the next sampling time; None before a frame
        self._last_pts = -math.inf

    @classmethod
    def from_settings(cls, settings: SourceSettings) -> FrameSampler:
        return cls(fps=settings.fps, every=settings.every)

    def keep(self, index: int, pts: float) -> bool:
        """Whether the frame with decoded ``index`` and ``pts`` (seconds) is kept."""
        if self.period is None:
            return index % self.every == 0
        period = self.period
        backwards = pts < self._last_pts - period
        self._last_pts = pts
        if self._k is None or backwards:
            self._anchor, self._k = pts, 1
            return True
        tolerance = JITTER_TOLERANCE * period
        if pts < self._anchor + self._k * period - tolerance:
            return False
        # This frame serves every sampling time it has reached (several after a gap).
        self._k = max(self._k + 1, math.floor((pts - self._anchor + tolerance) / period) + 1)
        return True
