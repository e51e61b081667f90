"""Sources: the interface every input (file, image folder, live feed) implements.

A :class:`Source` is an iterable of :class:`~engine.frames.Frame` (uint8 RGB, HWC) read
once, front to back. ``index`` is the frame's position in the decoded stream before
sampling; ``pts`` is its presentation time in seconds from the start of the stream.
Errors are :class:`~engine.errors.SourceError` subclasses, raised *after* the frames
decoded before the problem have been yielded, so a caller keeps their records.

:class:`DecodingSource` is the base of the sources that decode themselves: a subclass
overrides :meth:`DecodingSource._decode` only; the base applies the frame-size and
duration limits, the sampling (before any pixel conversion, so skipped frames cost
only their decoding) and releases resources in ``finally``.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from engine.errors import FrameTooLargeError, SourceError, SourceTooLongError
from engine.frames import Frame
from engine.sources.sampler import FrameSampler
from engine.sources.settings import SourceSettings

log = logging.getLogger(__name__)


class Source(ABC):
    """An input of frames. Iterate it once; close it (or use ``with``) when done."""

    name: str
    """The input as the user gave it (a path or URL); copied into every frame."""
    nominal_fps: float | None
    """The frame rate the input declares (None when it declares none)."""

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """The sampled frames, in presentation order. A source can be iterated once."""

    @abstractmethod
    def close(self) -> None:
        """Release files and decoders. Idempotent; stops an unfinished iteration."""

    @property
    def estimated_frames(self) -> int | None:
        """How many frames iteration will yield, when the input declares enough to tell.

        An estimate for progress bars (containers may declare counts loosely); None
        for inputs of unknown length (live feeds, raw streams).
        """
        return None

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


@dataclass(frozen=True)
class DecodedFrame:
    """A frame as a decoder gives it, before conversion to an RGB array."""

    index: int
    pts: float
    width: int | None
    """Known before conversion for video; None where only converting tells (images)."""
    height: int | None
    to_rgb: Callable[[], np.ndarray]
    """Converts (or reads) the picture: uint8 RGB, shape (height, width, 3)."""


class DecodingSource(Source):
    """Base of sources that decode frames themselves (files, folders, feeds).

    Subclasses implement :meth:`_decode` (every frame of the stream, in order, as
    :class:`DecodedFrame`) and :meth:`_release`.
    """

    def __init__(self, name: str, settings: SourceSettings) -> None:
        self.name = name
        self.settings = settings
        self.nominal_fps = None
        self._frames: Generator[Frame, None, None] | None = None
        self._closed = False
        self._released = False

    @property
    def estimated_frames(self) -> int | None:
        frames, seconds = self._declared_extent()
        s = self.settings
        if s.fps and seconds:
            return max(1, math.ceil(seconds * s.fps))
        if frames:
            return math.ceil(frames / s.every)
        return None

    def _declared_extent(self) -> tuple[int | None, float | None]:
        """(frame count, seconds) as the input declares them, each None if unknown."""
        return None, None

    @abstractmethod
    def _decode(self) -> Generator[DecodedFrame, None, None]:
        """Every decoded frame, in presentation order; raises SourceError on bad input."""

    def _release(self) -> None:
        """Close files and decoders. Called once: when iteration ends, or on close."""

    def _release_once(self) -> None:
        if not self._released:
            self._released = True
            self._release()

    def __iter__(self) -> Iterator[Frame]:
        if self._frames is not None or self._closed:
            raise RuntimeError(f"{self!r} was already read or closed; open the input again")
        self._frames = self._sampled()
        return self._frames

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._frames is not None:
            # Runs the generator's finally if it started. Call from the thread that
            # iterates (the muxer's reader thread closes its own iterator).
            self._frames.close()
        self._release_once()

    def _sampled(self) -> Generator[Frame, None, None]:
        sampler = FrameSampler.from_settings(self.settings)
        decoded = kept = 0
        frames = self._decode()
        try:
            for raw in frames:
                arrived = time.time()
                decoded += 1
                if raw.width is not None and raw.height is not None:
                    self._check_size(raw.width, raw.height)
                if raw.pts > self.settings.max_duration_s:
                    raise SourceTooLongError(self.name, raw.pts, self.settings.max_duration_s)
                if not sampler.keep(raw.index, raw.pts):
                    continue
                image = raw.to_rgb()
                self._check_size(image.shape[1], image.shape[0])
                kept += 1
                yield Frame(self.name, raw.index, raw.pts, image, arrived=arrived)
            log.info("%s: end of stream, %d frames decoded, %d kept", self.name, decoded, kept)
        except GeneratorExit:
            log.info("%s: closed by the reader after %d frames decoded", self.name, decoded)
            raise
        except Exception as error:
            reason = error.problem if isinstance(error, SourceError) else repr(error)
            log.warning("%s: stopped after %d frames decoded: %s", self.name, decoded, reason)
            raise
        finally:
            self._closed = True
            frames.close()  # leave the decoder's loop before its resources go
            self._release_once()

    def _check_size(self, width: int, height: int) -> None:
        if width * height > self.settings.max_frame_pixels:
            raise FrameTooLargeError(self.name, width, height, self.settings.max_frame_pixels)
