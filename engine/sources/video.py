"""Video files decoded with PyAV (FFmpeg): H.264, HEVC, VP9, ... in MP4, MKV, WebM, TS, ...

The first video stream is decoded (cover art, an "attached picture", does not count),
with FFmpeg's automatic frame/slice threading, and converted to uint8 RGB.

Timestamps: ``pts`` is the decoder's timestamp (``frame.time``) minus that of the first
decoded frame, so it starts at 0 whatever the container's start time (MPEG-TS starts
anywhere). Frames without a timestamp (raw ``.h264``/``.hevc`` streams) are placed
``1 / nominal_fps`` after the previous frame.

Corruption, as far as FFmpeg lets us see it:

* **Detected** (:class:`~engine.errors.CorruptStreamError` after the good frames):
  an error returned by the demuxer or the decoder. In MP4/MOV the index gives exact
  packet boundaries, so damaged media data reaches the decoder and fails there.
  Frames still inside the decoder when it fails (its reorder delay and frame threads,
  a few frames) are lost.
* **Detected**: a stream that ends more than :data:`END_TOLERANCE_S` before the
  duration its container *declares* for it: the MP4/MOV track duration, or the
  per-track ``DURATION`` tag FFmpeg and mkvmerge write into Matroska/WebM. This catches
  truncated files and Matroska files whose second half is overwritten, where the
  demuxer resynchronises over the garbage and silently reaches the end of the file.
* **Not detected**: damage FFmpeg conceals. MPEG-TS and raw streams declare no
  duration; their demuxers skip garbage and the file just ends early, or loses frames
  in the middle. Damaged slices are concealed by the decoder (copied from neighbouring
  blocks or frames) and only logged by FFmpeg; PyAV does not report those frames as
  corrupt. Such frames are yielded as they decode.
* A file with a video stream but no decodable frame is an
  :class:`~engine.errors.EmptySourceError`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Generator
from functools import partial

import av
import av.error
import numpy as np
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from engine.errors import (
    CorruptStreamError,
    EmptySourceError,
    NotAVideoError,
)
from engine.sources.base import DecodedFrame, DecodingSource
from engine.sources.ffmpeg import check_declared_size, decode_packet, limit_options
from engine.sources.ffmpeg import ffmpeg_reason as _detail
from engine.sources.settings import SourceSettings

log = logging.getLogger(__name__)

FALLBACK_FPS = 25.0
"""Frame rate used to place frames without timestamps when the stream declares none."""

END_TOLERANCE_S = 1.0
"""A stream may end this much before its declared duration (rounding, edit lists, a
long last frame) before it counts as truncated."""

_INDEXED_FORMATS = {"mov", "mp4"}
_MATROSKA_FORMATS = {"matroska", "webm"}


class VideoFileSource(DecodingSource):
    """A video file (or anything FFmpeg demuxes), opened at construction.

    Raises :class:`NotAVideoError` when FFmpeg cannot open the file or it holds no video
    stream, and :class:`FrameTooLargeError` when the stream declares frames over the
    limit, both before any decoding. A picture over the limit in a stream that declares
    no size (an image under a video name) or grows mid-way is refused by the decoder
    before it is allocated: :class:`FrameTooLargeError` at that frame (see
    :mod:`engine.sources.ffmpeg`).
    """

    decoder = "pyav"

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: SourceSettings | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name if name is not None else str(path), settings or SourceSettings())
        self.path = str(path)
        try:
            self._container: InputContainer | None = av.open(
                self.path,
                mode="r",
                options=limit_options(self.settings),
                metadata_errors="replace",
            )
        except av.error.FFmpegError as error:
            raise NotAVideoError(self.name, _detail(error)) from error
        try:
            self._stream = self._video_stream(self._container)
            rate = self._stream.average_rate or self._stream.guessed_rate
            self.nominal_fps = float(rate) if rate else None
        except BaseException:
            self._container.close()
            raise
        context = self._stream.codec_context
        log.info(
            "%s: %s, %s %dx%d, %s fps",
            self.name,
            self._container.format.name,
            context.name,
            context.width,
            context.height,
            f"{self.nominal_fps:.3f}" if self.nominal_fps else "unknown",
        )

    def _declared_extent(self) -> tuple[int | None, float | None]:
        assert self._container is not None
        seconds = _declared_duration(self._container, self._stream)
        if seconds is None and self._container.duration:
            seconds = self._container.duration / av.time_base  # FFmpeg's estimate
        frames = self._stream.frames or None
        if frames is None and seconds and self.nominal_fps:
            frames = round(seconds * self.nominal_fps)
        return frames, seconds

    def _video_stream(self, container: InputContainer) -> VideoStream:
        streams = [
            s
            for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic
        ]
        if not streams:
            kinds = ", ".join(s.type for s in container.streams) or "no streams"
            raise NotAVideoError(self.name, f"no video stream; it holds: {kinds}")
        stream = streams[0]
        if stream.codec_context is None:
            raise NotAVideoError(self.name, "no decoder for its video codec")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.settings.decode_threads
        check_declared_size(stream, self.name, self.settings)
        return stream

    def _decode(self) -> Generator[DecodedFrame, None, None]:
        container, stream = self._container, self._stream
        assert container is not None, "decoding a released source"
        fps = self.nominal_fps or FALLBACK_FPS
        clock = _Clock(fps)
        index, end, warned = -1, 0.0, False
        try:
            for packet in container.demux(stream):
                if packet.is_corrupt and not warned:
                    warned = True
                    log.warning(
                        "%s: the demuxer flags a packet at byte %d as corrupt; "
                        "frames may show concealed damage",
                        self.name,
                        packet.pos,
                    )
                for frame in decode_packet(packet, self.name, self.settings):
                    index += 1
                    pts = clock.pts(index, frame.time)
                    end = pts + _duration(frame, fps)
                    yield DecodedFrame(
                        index, pts, frame.width, frame.height, partial(_to_rgb, frame)
                    )
        except av.error.FFmpegError as error:
            if index < 0:
                raise EmptySourceError(
                    self.name, f"no decodable video frame ({_detail(error)})"
                ) from error
            raise CorruptStreamError(self.name, index, _detail(error)) from error
        if index < 0:
            raise EmptySourceError(self.name, "the video stream holds no frames")
        self._check_complete(index, clock.first_time + end)

    def _check_complete(self, last_index: int, end_time: float) -> None:
        """Raise CorruptStreamError if the stream ended well before its declared end."""
        assert self._container is not None
        declared = _declared_duration(self._container, self._stream)
        if declared is None:
            return
        # Declared durations are lengths (MP4, mkvmerge) or end times (FFmpeg's Matroska
        # muxer): measure the decoded stream both ways and take the more lenient.
        start = self._stream.start_time
        begin = float(start * self._stream.time_base) if start is not None else 0.0
        decoded = max(end_time, end_time - begin)
        if declared - decoded > END_TOLERANCE_S:
            raise CorruptStreamError(
                self.name,
                last_index,
                f"the video ends at {decoded:.2f} s but the container declares "
                f"{declared:.2f} s: the file is truncated or damaged",
            )

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class _Clock:
    """Turns decoder timestamps into seconds from the first frame, inventing missing ones."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.origin: float | None = None
        """Decoder time of pts 0: the first frame's (extrapolated back if it had none)."""
        self._last: tuple[int, float] | None = None

    @property
    def first_time(self) -> float:
        return self.origin or 0.0

    def pts(self, index: int, time: float | None) -> float:
        if self._last is None:
            expected = index / self.fps
        else:
            last_index, last_pts = self._last
            expected = last_pts + (index - last_index) / self.fps
        if time is not None and math.isfinite(time):
            if self.origin is None:
                self.origin = time - expected
            pts = time - self.origin
        else:
            pts = expected
        self._last = (index, pts)
        return pts


def _to_rgb(frame: VideoFrame) -> np.ndarray:
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))


def _duration(frame: VideoFrame, fps: float) -> float:
    if frame.duration and frame.time_base:
        return float(frame.duration * frame.time_base)
    return 1.0 / fps


def _declared_duration(container: InputContainer, stream: VideoStream) -> float | None:
    """The video's duration as its container's index or tags declare it; None if not.

    Estimates are not declarations: FFmpeg guesses MPEG-TS durations from the last
    timestamp it finds and others from the bit rate, so those formats return None.
    """
    names = set(container.format.name.split(","))
    if names & _INDEXED_FORMATS:
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        return None
    if names & _MATROSKA_FORMATS:
        for key, value in stream.metadata.items():
            if key.upper().split("-")[0] == "DURATION":
                return _parse_clock(value)
    return None


def _parse_clock(value: str) -> float | None:
    """``'01:02:03.5'`` → 3723.5 seconds; None if malformed."""
    try:
        hours, minutes, seconds = value.strip().split(":")
        total = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
    return total if math.isfinite(total) and total > 0 else None
